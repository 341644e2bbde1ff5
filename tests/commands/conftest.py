"""Fixtures and helpers for the end-to-end CLI tests of `videoalign score` and `videoalign bench`.

Synthetic clips are written once per session: decoding them is ~10x faster than the shared 720p examples,
which only the parity tests use.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from videoalign.cli import app
from videoalign.video import write_video

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["a red car", "a cat on a sofa", "waves on a beach", "a city at night", "a dog running", "snow falling"]

_runner = CliRunner()


def pytest_collection_modifyitems(config, items):
    """Every test here runs the real CLI end to end: `slow`, so `pytest -m "not slow"` is the fast inner loop."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


def make_clip(path: Path, seed: int, height: int = 64, width: int = 96, frames: int = 16, fps: float = 8.0) -> Path:
    """A random uint8 clip. 16 frames at 8 fps = 2 s -> 4 frames sampled at the default 2 fps."""
    rng = np.random.default_rng(seed)
    return write_video(path, rng.integers(0, 255, size=(frames, height, width, 3), dtype=np.uint8), fps=fps)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    """`<dir>/videos/c0..c5.mp4`: two frame sizes and two lengths, so batches need padding.

    c0, c2, c4: 64x96; c1, c3, c5: 64x128. c0-c2: 16 frames (4 sampled); c3-c5: 24 frames (6 sampled).
    """
    root = tmp_path_factory.mktemp("score_clips")
    for i in range(6):
        make_clip(root / "videos" / f"c{i}.mp4", seed=100 + i, width=96 if i % 2 == 0 else 128,
                  frames=16 if i < 3 else 24)
    return root


@pytest.fixture(scope="session")
def clips(clip_dir) -> list[Path]:
    return [clip_dir / "videos" / f"c{i}.mp4" for i in range(6)]


def write_csv(path: Path, rows: list[tuple], header: tuple = ("video", "prompt")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def link_videos(folder: Path, clips: list[Path], names: list[str] | None = None) -> list[str]:
    """Symlink clips into `folder/videos/` (so a test may add or break files there); returns the CSV paths."""
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    names = names or [c.name for c in clips]
    for clip, name in zip(clips, names):
        (folder / "videos" / name).symlink_to(clip)
    return [f"videos/{n}" for n in names]


def invoke(*args):
    """Run the CLI in-process; `.output` holds stdout and stderr, `.stdout` only stdout."""
    return _runner.invoke(app, [str(a) for a in args])


def read_jsonl(path: Path) -> list[dict]:
    """Strict: every line must be complete JSON (a torn line fails the test)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def cli_env(**extra) -> dict:
    """Environment for CLI subprocesses: unbuffered, offline, no stray launcher variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU")}
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               COLUMNS="200")
    env.update(extra)
    return env


def python_cli(*args) -> list[str]:
    return [sys.executable, "-m", "videoalign", *[str(a) for a in args]]


def strip_times(records: list[dict]) -> list[dict]:
    """metrics.jsonl records without their wall-clock `time`."""
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def kill_and_resume(argv: list, out: Path, kill_after: int, env: dict | None = None):
    """Run `videoalign <argv>` in a subprocess that SIGKILLs itself right after optimiser step `kill_after` is logged
    (VIDEOALIGN_KILL_AFTER_STEP, trainer.py), check that it died so with steps 1..kill_after in metrics.jsonl, then
    resume it in this process with --resume. Returns the resumed run's CliRunner result."""
    import signal
    import subprocess

    import torch

    # the same CPU threads as this process (the thread count changes float reduction order, so the numbers)
    extra = {"OMP_NUM_THREADS": str(torch.get_num_threads()), **(env or {})}
    proc = subprocess.run(python_cli(*argv), cwd=REPO, env=cli_env(VIDEOALIGN_KILL_AFTER_STEP=str(kill_after),
                                                                   **extra),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, kill_after + 1))
    result = invoke(*argv, "--resume")
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="session")
def cli() -> SimpleNamespace:
    """The helpers above, for test modules (conftest modules are not meant to be imported)."""
    return SimpleNamespace(invoke=invoke, read_jsonl=read_jsonl, write_csv=write_csv, link_videos=link_videos,
                           error_lines=error_lines, env=cli_env, python_cli=python_cli, make_clip=make_clip,
                           repo=REPO, prompts=PROMPTS, kill_and_resume=kill_and_resume, strip_times=strip_times)


ALIGN_PROMPTS = ["a red ball rolling on grass", "a cat walking in the snow", "waves on a beach", "a city at night"]


def write_pair_file(root: Path, n: int = 8, seed: int = 0) -> Path:
    """`root/pairs.jsonl` in relabel's format over n pairs of 9-frame 32x32 clips (chosen brighter), with scores."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        texture = rng.integers(0, 60, size=(9, 32, 32, 3))
        for side, level in (("chosen", 170), ("rejected", 40)):
            write_video(root / "videos" / f"p{i}_{side}.mp4", (texture + level).astype(np.uint8), fps=8)
        scores = {"chosen": {"VQ": 1.0, "MQ": 0.5, "TA": 0.5 + 0.1 * i}, "rejected": {"VQ": -0.5, "MQ": 0.0, "TA": 0.1}}
        lines.append({"prompt": ALIGN_PROMPTS[i % 4], "group": f"g{i}", "chosen": f"videos/p{i}_chosen.mp4",
                      "rejected": f"videos/p{i}_rejected.mp4", "scores": scores})
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def pair_file(tmp_path_factory) -> Path:
    """Eight toy pairs (relabel's pairs JSONL, relative paths) for dpo and rwr."""
    return write_pair_file(tmp_path_factory.mktemp("align_pairs"))
