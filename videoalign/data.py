"""Records and their files: score-job CSVs, JSONL results, atomic writes and the prefetching worker pool.

CSV inputs (paths relative to the CSV's folder):
- `video,prompt`: one video per row;
- the reference's pair-label CSV `path_A,path_B,prompt,...`: every distinct video is scored once, with the
  prompt of its first occurrence (REFERENCE.md 9.6).

JSONL outputs are append-only while a job runs (one `write` per batch, then fsync) and readers drop a torn
last line, so a killed job loses nothing it wrote. Final files are written to a temp name and renamed.
"""

from __future__ import annotations

import csv
import json
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


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records with one write call and fsync, so a kill leaves whole lines (or one torn last line)."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
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
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int) -> Iterator[tuple[T, R | Exception]]:
    """`(item, fn(item))` in input order, computed by `workers` threads up to `ahead` items in advance.

    Threads suffice: decord and torch release the GIL while decoding and resizing, and they share memory with
    the model instead of copying frames between processes. An exception from `fn` is yielded, not raised, so
    one bad video does not stop the rest.
    """

    def call(item):
        try:
            return fn(item)
        except Exception as err:  # noqa: BLE001 - reported per item by the caller
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
    """Rows of a relabel input. kind "manifest": rows have video, prompt, group, model; kind "pairs": rows
    have path_A, path_B, prompt. Paths are resolved against `root` (the input's folder, or the cwd for -)."""

    kind: str
    rows: list[dict[str, Any]]
    root: Path
    name: str


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
    first = text.lstrip()[:1]
    if first == "{":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                rows.append({"_row": number, "_error": f"{name} line {number}: not valid JSON; fix or delete it"})
                continue
            row["_row"] = number
            rows.append(row)
        columns = set().union(*(r.keys() for r in rows)) if rows else set()
    else:
        reader = csv.DictReader(io.StringIO(text))
        columns = {c.strip() for c in (reader.fieldnames or [])}
        rows = [{**{(k or "").strip(): v for k, v in row.items()}, "_row": n} for n, row in
                enumerate(reader, start=2)]
    if {"path_A", "path_B", "prompt"} <= columns:
        kind = "pairs"
    elif {"video", "prompt"} <= columns:
        kind = "manifest"
    else:
        found = ",".join(sorted(c for c in columns if not c.startswith("_"))) or "nothing"
        raise DataError(f"{name}: needs the columns prompt,video[,group,model] (a manifest) or path_A,path_B,prompt "
                        f"(a pair CSV); found {found}")
    return RelabelInput(kind, rows, root, name)


@dataclass
class LabelledPair:
    """A human-judged pair. labels: dimension (or "Overall") -> 1 (A better), -1 (B better), 0 (tie) or NaN."""

    row: int
    video_a: str  # as the pair file writes it
    video_b: str
    path_a: Path
    path_b: Path
    prompt: str
    labels: dict[str, float]


def read_labelled_pairs(source: str | Path, videos_root: str | Path | None = None,
                        dims: tuple[str, ...] = ("VQ", "MQ", "TA")) -> list[LabelledPair]:
    """VideoGen-RewardBench / reference pair CSV (path_A, path_B, prompt, VQ, MQ, TA[, Overall]) or GenAI-Bench
    votes (left_video, right_video, prompt, vote_type), as CSV or JSONL. Videos resolve against
    `videos_root`, else the file's folder."""
    from videoalign.metrics import label_from_pair, label_from_vote

    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: no such pair file; check --pairs")
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip()[:1] == "{":
        rows = [(n, json.loads(line)) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    else:
        import io

        rows = list(enumerate(csv.DictReader(io.StringIO(text)), start=2))
    columns = set().union(*(r.keys() for _, r in rows)) if rows else set()
    root = Path(videos_root) if videos_root else path.parent
    pairs = []
    if {"path_A", "path_B", "prompt"} <= columns:
        label_columns = [c for c in (*dims, "Overall") if c in columns]
        if not label_columns:
            raise DataError(f"{path}: no label columns ({', '.join(dims)}, Overall); add at least one")
        for n, r in rows:
            labels = {c: label_from_pair(str(r.get(c) or "").strip()) for c in label_columns}
            pairs.append(LabelledPair(n, r["path_A"], r["path_B"], root / r["path_A"], root / r["path_B"],
                                      r.get("prompt") or "", labels))
    elif {"left_video", "right_video", "vote_type"} <= columns:
        for n, r in rows:
            label = label_from_vote(str(r.get("vote_type") or "").strip())
            prompt = r.get("prompt") or r.get("text") or ""
            pairs.append(LabelledPair(n, r["left_video"], r["right_video"], root / r["left_video"],
                                      root / r["right_video"], prompt, {"Overall": label}))
    else:
        found = ",".join(sorted(columns)) or "nothing"
        raise DataError(f"{path}: needs path_A,path_B,prompt,<labels> (VideoGen-RewardBench) or "
                        f"left_video,right_video,vote_type,prompt (GenAI-Bench); found {found}")
    return pairs


#: label cell -> training label (REFERENCE.md 7.1): "invalid" and empty cells are masked (22), as the reference
TRAIN_LABELS = {"A": 1, "B": -1, "same": 0, "invalid": 22, "": 22}
NOT_LABEL_COLUMNS = {"path_A", "path_B", "prompt", "A_model", "B_model", "Overall"}


@dataclass
class TrainPair:
    """A training pair: labels (one per dimension) are 1 (A better), -1 (B better), 0 (tie) or 22 (masked)."""

    row: int
    path_a: Path
    path_b: Path
    prompt: str
    labels: list[int]
    num_frames_a: int | None = None
    num_frames_b: int | None = None


def label_columns(columns: Iterable[str]) -> list[str]:
    """The dimension columns of a pair CSV: every column that is not a path, prompt, model, fps, frame count or
    MOS column, in file order (so `VQ,MQ,TA` gives three reward tokens, `Aesthetics` one)."""
    return [c for c in columns if c not in NOT_LABEL_COLUMNS
            and not c.startswith(("fps_", "num_frames_", "MOS_"))]


def read_train_pairs(path: str | Path, dims: list[str] | None = None, videos_root: str | Path | None = None):
    """Read a reference-format training CSV. Returns (dims, pairs, problems): rows with an unknown label, a
    missing video or no prompt are reported in `problems` (with their row number) and skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such pair CSV; check the data path in the recipe")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = list(reader)
    missing = [c for c in ("path_A", "path_B", "prompt") if c not in columns]
    if missing:
        raise DataError(f"{path}: missing columns {','.join(missing)}; a pair CSV needs path_A,path_B,prompt,<dims>")
    dims = list(dims) if dims else label_columns(columns)
    absent = [d for d in dims if d not in columns]
    if not dims or absent:
        raise DataError(f"{path}: no label column for {','.join(absent) or 'any dimension'}; add one column per "
                        "dimension with labels A, B or same")
    root = Path(videos_root) if videos_root else path.parent
    pairs, problems = [], []
    for number, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        bad = [f"{d}={row.get(d)!r}" for d in dims if row.get(d, "") not in TRAIN_LABELS]
        if bad:
            problems.append(f"{path} row {number}: unknown label {', '.join(bad)}; use A, B, same or invalid")
            continue
        if not row.get("prompt"):
            problems.append(f"{path} row {number}: empty prompt; fill it in")
            continue
        a, b = root / row["path_A"], root / row["path_B"]
        absent_files = [str(p) for p in (a, b) if not p.is_file()]
        if absent_files:
            problems.append(f"{path} row {number}: missing video {', '.join(absent_files)}")
            continue

        def frames(key):
            value = row.get(key)
            return int(float(value)) if value else None

        pairs.append(TrainPair(number, a, b, row["prompt"], [TRAIN_LABELS[row[d]] for d in dims],
                               frames("num_frames_A"), frames("num_frames_B")))
    return dims, pairs, problems


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
