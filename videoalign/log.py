"""Console output: one rich console on stderr, a progress helper (rank 0 only) and the metrics.jsonl writer.

A rich bar is drawn on a terminal; elsewhere (CI, files, pipes) plain progress lines are printed every few
percent, so logs stay readable. A bar can carry live figures (`bar.advance(1, loss=..., lr=...)`). Logging goes
through rich's handler so log lines do not tear the bar.

`MetricsLog` is the one writer of metrics.jsonl (docs/formats.md, metrics.jsonl): strict JSON, one line per
record with its time first, and on resume the file is cut back to the records of the steps up to the checkpoint.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line in logs
stdout = Console(soft_wrap=True)


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger("videoalign")
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(console=console, show_path=False, show_time=False, markup=False))
    root.setLevel(level)
    root.propagate = False
    for noisy in ("transformers", "accelerate", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # transformers not imported yet is fine; it is imported lazily
        pass


def _figures(figures: dict) -> str:
    """`loss 0.6931 lr 1e-03`: live figures of a progress line."""
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())


class _Plain:
    """Progress as plain lines: at most ~20 lines per job."""

    def __init__(self, total: int, description: str):
        self.total, self.description, self.done = total, description, 0
        self.start = time.perf_counter()
        self.every = max(1, total // 20)

    def advance(self, n: int = 1, **figures) -> None:
        self.done += n
        if self.done % self.every == 0 or self.done == self.total:
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            extra = f" {_figures(figures)}" if figures else ""
            console.print(f"{self.description}: {self.done}/{self.total} ({rate:.2f}/s){extra}", highlight=False)


class _Null:
    def advance(self, n: int = 1, **figures) -> None:
        pass


@contextmanager
def progress(total: int, description: str, enabled: bool = True):
    """`with progress(n, "scoring") as bar: bar.advance()`; draws nothing when not `enabled` (rank > 0)."""
    if not enabled or total <= 0:
        yield _Null()
        return
    if not console.is_terminal:
        yield _Plain(total, description)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[figures]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, figures="")

        class _Rich:
            def advance(self, n: int = 1, **figures) -> None:
                bar.update(task, advance=n, **({"figures": _figures(figures)} if figures else {}))

        yield _Rich()


def error_line(message: str) -> None:
    """A one-line user-facing error on stderr."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


class MetricsLog:
    """metrics.jsonl of a training run, written by rank 0 only (`enabled`). Opening it for a run that starts at
    `start_step` keeps the records of steps 1..start_step (and drops later ones, and any final record): what the
    checkpoint the run resumes from had seen. So a resumed run's file equals the uninterrupted run's."""

    def __init__(self, path, start_step: int, enabled: bool = True):
        from pathlib import Path

        from videoalign.data import read_jsonl, write_jsonl_atomic

        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= start_step and not r.get("final")]
        if start_step == 0:
            kept = []
        if kept or self.path.exists():
            write_jsonl_atomic(self.path, kept)

    def write(self, record: dict) -> None:
        from videoalign.data import append_jsonl

        if self.enabled:
            append_jsonl(self.path, [{"time": round(time.time(), 3), **record}])
