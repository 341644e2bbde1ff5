"""Records and their files: score-job CSVs, JSONL results, atomic writes and the prefetching worker pool.

CSV inputs (paths relative to the CSV's folder):
- `video,prompt`: one video per row;
- the reference's pair-label CSV `path_A,path_B,prompt,...`: every distinct video is scored once, with the
  prompt of its first occurrence (docs/numerics.md, Accuracy with and without ties).

JSONL outputs are append-only while a job runs (one `write` per batch, then fsync) and readers drop a torn
last line, so a killed job loses nothing it wrote. Final files are written to a temp name and renamed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class DataError(ValueError):
    """A whole input file is unusable; the message names the file and what to change."""


@dataclass(frozen=True)
class ScoreItem:
    """One video to score. `key` identifies it across runs (the normalised path as written in the CSV)."""

    key: str
    video: str  # as written in the input, reported back in the output
    path: Path  # resolved location on disk
    prompt: str
    #: set when the CSV row itself is unusable; the item is reported with this error and not scored
    error: str | None = None


def video_key(path: str | Path) -> str:
    """Identity of a video across files and runs: its normalised absolute path (`./videos/a.mp4` and
    `videos/a.mp4` under the same folder are one video)."""
    return os.path.normpath(os.path.abspath(path))


def read_score_csv(path: str | Path) -> list[ScoreItem]:
    """Read a `video,prompt` CSV or a pair-label CSV into distinct ScoreItems, in first-seen order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such CSV file; check the --csv path")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = list(reader)
    if "video" in columns and "prompt" in columns:
        video_columns = ["video"]
    elif {"path_A", "path_B", "prompt"} <= set(columns):
        video_columns = ["path_A", "path_B"]
    else:
        raise DataError(
            f"{path}: needs the columns video,prompt (or path_A,path_B,prompt for pairs); found "
            f"{','.join(columns) or 'no header'}; add a header row with those names"
        )
    root = path.parent
    items: dict[str, ScoreItem] = {}
    for row_number, row in enumerate(rows, start=2):  # line 1 is the header
        row = {(k or "").strip(): v for k, v in row.items()}
        prompt = row.get("prompt")
        for column in video_columns:
            video = (row.get(column) or "").strip()
            if not video:
                # A stable key (video_key is idempotent on it), so the error record keeps its place on resume.
                key = video_key(root / f"<{path.name} row {row_number} {column}>")
                items.setdefault(key, ScoreItem(key, "", Path(key), prompt or "",
                                                error=f"{path} row {row_number}: empty {column}; fill in a video path"))
                continue
            key = video_key(root / video)
            if key in items:
                continue
            error = None
            if prompt is None or not prompt.strip():
                error = f"{path} row {row_number}: empty prompt for {video}; add the prompt text"
            items[key] = ScoreItem(key, video, Path(key), prompt or "", error=error)
    return list(items.values())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file; a torn last line (a killed writer) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with path.open("rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # unterminated final line: a write cut short
                break
            raise DataError(f"{path} line {number}: not valid JSON; delete the line or the file") from None
    return records


def strict_json(value):
    """`value` with every non-finite float (NaN, +-inf) replaced by None: JSON that strict readers accept. Every
    JSON and JSONL file videoalign writes goes through it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    """One strict JSON line (with its newline)."""
    return json.dumps(strict_json(record), ensure_ascii=False, allow_nan=False) + "\n"


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records with one write call and fsync, so a kill leaves whole lines (or one torn last line)."""
    payload = "".join(json_line(r) for r in records).encode("utf-8")
    if not payload:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A writer killed mid-line leaves a torn last line: cut it off (readers ignore it anyway), so it never
        # becomes a corrupt middle line once more records follow.
        size = os.fstat(fd).st_size
        if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
            tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
            cut = tail.rfind(b"\n")
            os.ftruncate(fd, size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= (1 << 20) else size))
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, text: str) -> None:
    """Write a whole file under a temp name in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json_line(r) for r in records))


def write_json(path: str | Path, value: Any) -> None:
    """A strict, indented JSON file, written atomically."""
    write_atomic(path, json.dumps(strict_json(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int) -> Iterator[tuple[T, R | Exception]]:
    """`(item, fn(item))` in input order, computed by `workers` threads up to `ahead` items in advance.

    Threads suffice: decord and torch release the GIL while decoding and resizing, and they share memory with
    the model instead of copying frames between processes. An exception from `fn` is yielded, not raised, so
    one bad video does not stop the rest.
    """

    def call(item):
        try:
            return fn(item)
        except Exception as err:
            return err

    if workers <= 0:
        for item in items:
            yield item, call(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="videoalign-prefetch") as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(call, item)))
            if len(pending) > ahead:
                done_item, future = pending.popleft()
                yield done_item, future.result()
        while pending:
            done_item, future = pending.popleft()
            yield done_item, future.result()


@dataclass
class RelabelInput:
    """A relabel input. kind "manifest": `rows` have video, prompt, group, model; kind "pairs": `pairs` is what
    labels.read_pairs found (a pair CSV, or relabel's own pairs JSONL). Paths are resolved against `root` (the
    input's folder, or the cwd for -)."""

    kind: str
    rows: list[dict[str, Any]]
    root: Path
    name: str
    pairs: Any = None


def read_relabel_input(source: str) -> RelabelInput:
    """A generation manifest (CSV or JSONL: prompt, video, optional group, model) or a reference pair CSV,
    told apart by their columns. `-` reads standard input (CSV or JSONL, detected from the first line)."""
    import io
    import sys

    if source == "-":
        text, root, name = sys.stdin.read(), Path.cwd(), "<stdin>"
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{source}: no such input file; pass a manifest (CSV/JSONL) or a pair CSV")
        text, root, name = path.read_text(encoding="utf-8-sig"), path.parent, str(path)
    if text.lstrip()[:1] == "{":
        rows = [{**row, "_row": number} if isinstance(row, dict) else
                {"_row": number, "_error": f"{name} line {number}: not a JSON object; fix or delete it"}
                for number, row in json_lines(text)]
        columns = set().union(*(r.keys() for r in rows)) if rows else set()
    else:
        reader = csv.DictReader(io.StringIO(text))
        columns = {c.strip() for c in (reader.fieldnames or [])}
        rows = [{**{(k or "").strip(): v for k, v in row.items()}, "_row": n} for n, row in
                enumerate(reader, start=2)]
    if {"path_A", "path_B", "prompt"} <= columns or {"chosen", "rejected", "prompt"} <= columns:
        from videoalign.labels import read_pairs

        found = read_pairs(name, root, dims=[], check_videos=False, text=text)
        return RelabelInput("pairs", [], root, name, found)
    if not {"video", "prompt"} <= columns:
        found = ",".join(sorted(c for c in columns if not c.startswith("_"))) or "nothing"
        raise DataError(f"{name}: needs the columns prompt,video[,group,model] (a manifest) or path_A,path_B,prompt "
                        f"(a pair CSV); found {found}")
    return RelabelInput("manifest", rows, root, name)


@dataclass(frozen=True)
class RewardedVideo:
    """A video with its reward, for Flow-RWR: `chosen` is False for the rejected side of a pair."""

    line: int
    prompt: str
    path: Path
    reward: float | None
    chosen: bool = True


def read_rewarded_videos(source: str | Path, videos_root: str | Path | None = None,
                         weights: dict[str, float] | None = None,
                         need_rewards: bool = True) -> tuple[list[RewardedVideo], list[str]]:
    """Videos with rewards: both sides of each pair of a pair file (labels.read_preferences; reward = the weighted
    scores of relabel's JSONL), or every record of score's JSONL (reward = its weighted scores, default 1:1:1).
    need_rewards=False accepts a label-only pair CSV (uniform weighting). Returns (videos, problems)."""
    from videoalign.labels import DIMS, read_preferences
    from videoalign.preferences import weighted_reward

    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the data path in the recipe")
    text = path.read_text(encoding="utf-8-sig")
    jsonl = text.lstrip()[:1] == "{"
    rows = json_lines(text) if jsonl else []
    # a pair file if any line looks like a pair: a first line that lacks "chosen" must stay one problem
    if not jsonl or any(isinstance(r, dict) and ("chosen" in r or "rejected" in r) for _, r in rows):
        found = read_preferences(path, videos_root, text)
        pairs, problems = found.pairs, found.problems
        if need_rewards:
            unscored = [p for p in pairs if p.rewards() is None]
            if unscored and len(unscored) == len(pairs):
                raise DataError(f"{path}: has labels but no scores; run videoalign relabel on it first, or use "
                                "weighting uniform")
            problems += [f"{path} line {p.line}: no scores; rerun videoalign relabel on it" for p in unscored]
            pairs = [p for p in pairs if p.rewards() is not None]
        videos = []
        for p in pairs:
            r = p.rewards(weights) or (None, None)
            videos.append(RewardedVideo(p.line, p.prompt, p.path_a, r[0], True))
            videos.append(RewardedVideo(p.line, p.prompt, p.path_b, r[1], False))
        return videos, problems
    root = Path(videos_root) if videos_root else path.parent
    w = weights or {d: 1.0 for d in DIMS}
    videos, problems = [], []
    for n, row in rows:
        where = f"{path} line {n}"
        if isinstance(row, Exception) or not isinstance(row, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        if "error" in row:
            problems.append(f"{where}: {row.get('video')} has no score ({row['error']})")
            continue
        try:
            value = row.get("path") or row["video"]
            video = Path(value) if Path(value).is_absolute() else root / value
            reward = weighted_reward(row, w)
            prompt = row["prompt"]
        except (KeyError, TypeError) as exc:
            problems.append(f"{where}: missing field {exc}; score records need video, prompt and {', '.join(w)}")
            continue
        if not video.is_file():
            problems.append(f"{where}: missing video {video}; fix the path or drop the line")
            continue
        videos.append(RewardedVideo(n, prompt, video, float(reward)))
    return videos, problems


def json_lines(text: str) -> list[tuple[int, Any]]:
    """[(line number, record or the parse error)] of the non-blank lines of a JSONL text."""
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                rows.append((n, exc))
    return rows


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a CSV with a `prompt` column (other columns ignored, e.g. ../shared/data/eval_prompts/*.csv) or
    a text file with one prompt a line; blank entries are skipped, the order kept."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such prompt file; give a CSV with a prompt column or a .txt, one prompt a line")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if "prompt" not in (reader.fieldnames or []):
                raise DataError(f"{path}: no `prompt` column (columns: {', '.join(reader.fieldnames or [])}); add "
                                "one, or give a .txt with one prompt a line")
            prompts = [(row.get("prompt") or "").strip() for row in reader]
    else:
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [p for p in prompts if p]
