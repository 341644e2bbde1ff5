"""The one resumable output: a JSONL file that several processes fill and a rerun resumes (docs/design.md,
Resumable outputs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from videoalign.data import append_jsonl, read_jsonl, write_atomic, write_jsonl_atomic


class ResumableOutput:
    """A JSONL output that several processes fill and a rerun resumes, without losing or repeating a record.

    While a job runs, each rank appends finished records to `<path>.parts/rank<r>.jsonl` (append_jsonl: whole lines
    only, fsync). `done()` reads the final file, then the parts of an interrupted run, keeping the latest record per
    `key(record)`. At the end the main process `merge`s everything into `path` in a given order (a temp file renamed
    into place) and deletes the parts. The settings that change the records are saved beside it (`settings_file`,
    YAML); `check_settings` refuses to resume with other values, naming each field.
    Used by score (and through it relabel, bench reward, bench winrate) and guide.
    """

    def __init__(self, path: str | Path, key: Callable[[dict], Any], settings_file: str | Path):
        self.path, self.key, self.settings_file = Path(path), key, Path(settings_file)
        self.parts = self.path.with_name(self.path.name + ".parts")

    def exists(self) -> bool:
        return self.path.is_file() or self.parts.is_dir()

    def check_settings(self, settings: dict, what: str = "records") -> None:
        """Raise a ValueError naming each setting that differs from the saved ones (when records exist)."""
        import yaml

        if not self.settings_file.is_file() or not self.exists():
            return
        saved = yaml.safe_load(self.settings_file.read_text()) or {}
        changed = [k for k in settings if k in saved and saved[k] != settings[k]]
        if changed:
            diffs = ", ".join(f"{k}: {saved[k]!r} -> {settings[k]!r}" for k in changed)
            raise ValueError(f"{self.path} holds {what} made with other settings ({diffs}); use a new output or the "
                             "same settings to resume")

    def save_settings(self, config: dict) -> None:
        import yaml

        write_atomic(self.settings_file, yaml.safe_dump(config, sort_keys=False))

    def done(self) -> dict[Any, dict]:
        """Records already written, latest per key: the final file, then the parts of an interrupted run."""
        out: dict[Any, dict] = {}
        for source in [self.path, *sorted(self.parts.glob("*.jsonl"))] if self.parts.is_dir() else [self.path]:
            for record in read_jsonl(source):
                key = self.key(record)
                if key is not None:
                    out[key] = record
        return out

    def append(self, rank: int, records: list[dict]) -> None:
        append_jsonl(self.parts / f"rank{rank}.jsonl", records)

    def merge(self, order: list) -> list[dict]:
        """Write every record into `path`: those of the keys in `order` first, in that order, then the others (a
        shared cache keeps them), once each; delete the parts. Returns the ordered records that exist."""
        records = self.done()
        ordered = [records[k] for k in order if k in records]
        wanted = set(order)
        write_jsonl_atomic(self.path, ordered + [r for k, r in records.items() if k not in wanted])
        if self.parts.is_dir():
            for f in self.parts.glob("*.jsonl"):
                f.unlink()
            self.parts.rmdir()
        return ordered
