"""The one label vocabulary, and the one reader of pair files (docs/numerics.md, Labels; docs/formats.md).

Labels, per pair and dimension, in the convention every loss and metric uses:
    1 = A better, -1 = B better, 0 = tie, INVALID (22) = no usable label (masked by the losses, left out of
    accuracies; the reference's value).
They come from three spellings, one table each:
    pair CSV cells      A, B, same; invalid or an empty cell = INVALID
    GenAI-Bench votes   leftvote, rightvote, tievote, bothbad_vote (a tie)
    relabel's JSONL     chosen, rejected, tie (relative to its chosen side, which is side A)
Cells are stripped of surrounding spaces and otherwise matched exactly (case matters, as in the reference). A value
outside the table is an error in the data: its row is reported and skipped, by every command alike.

`read_pairs` reads every pair file the commands take and returns one type, `Pair`:
- the reference's pair CSV `path_A,path_B,prompt,<one label column per dimension>[,Overall]` (extra columns fps_*,
  num_frames_*, MOS_*, A_model, B_model are not dimensions);
- relabel's pairs JSONL (`chosen` is side A, `rejected` side B; per-dimension labels, else the sign of the score
  difference; the weighted-reward label `reward`, or `Overall` in files from before 0.1);
- GenAI-Bench vote files (left_video, right_video, vote_type, prompt), CSV or JSONL, for `bench reward`.
Every row is a pair: a row that repeats an earlier one is kept and counts again (as in the reference's training
and accuracy scripts); the readers say how many rows repeat. A malformed row, an unknown label, an empty path or
prompt, or (with check_videos) a missing video is one problem "<file> line N: ..." and is skipped, so one bad line
never stops a run. Line numbers are the file's: a CSV's header is line 1.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from videoalign.data import DataError, json_lines

#: the released VideoReward's dimensions
DIMS = ("VQ", "MQ", "TA")
#: label of an entry without a usable label; the losses mask it, the accuracies leave it out
INVALID = 22
#: pair-CSV cell -> label
CELLS = {"A": 1, "B": -1, "same": 0, "invalid": INVALID, "": INVALID}
#: GenAI-Bench video `vote_type` -> label (left = A); "both bad" is a tie
VOTES = {"leftvote": 1, "rightvote": -1, "tievote": 0, "bothbad_vote": 0}
#: relabel's per-dimension label (its chosen side is A) -> label
SIDES = {"chosen": 1, "rejected": -1, "tie": 0}
#: columns of a pair CSV that are not dimensions (besides fps_*, num_frames_*, MOS_*)
NOT_DIMENSIONS = {"path_A", "path_B", "prompt", "A_model", "B_model", "Overall", "group"}
#: the key of the weighted-reward label in relabel's pairs (docs/numerics.md, Overall and reward)
REWARD = "reward"


def label_of(value: Any, table: dict[str, int] = CELLS) -> int | None:
    """The label of one cell or vote under `table`, or None when the value is not in it."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        return None
    return table.get(value.strip())


def is_dimension(column: str) -> bool:
    return column not in NOT_DIMENSIONS and not column.startswith(("fps_", "num_frames_", "MOS_"))


@dataclass(frozen=True)
class Pair:
    """Two videos of one prompt and what is known of them. Side A is the pair file's first video (path_A, chosen
    or left_video)."""

    line: int
    prompt: str
    video_a: str  # as the file writes it
    video_b: str
    path_a: Path  # resolved against videos_root, else the file's folder
    path_b: Path
    #: dimension (and "Overall" from a CSV or vote file, "reward" from relabel) -> 1, -1, 0 or INVALID
    labels: dict[str, int] = field(default_factory=dict)
    #: relabel's scores of the two sides, {dim: s}, or None
    scores_a: dict[str, float] | None = None
    scores_b: dict[str, float] | None = None
    #: relabel's weights of the weighted reward, or None
    weights: dict[str, float] | None = None
    #: a CSV's num_frames_A / num_frames_B, or None
    num_frames_a: int | None = None
    num_frames_b: int | None = None
    group: str | None = None

    def dim_labels(self, dims) -> list[int]:
        return [self.labels.get(d, INVALID) for d in dims]

    def rewards(self, weights: dict[str, float] | None = None) -> tuple[float, float] | None:
        """(r_A, r_B), r = sum_d w_d s_d / sum_d w_d with `weights`, else the line's own, else equal weights over the
        released dimensions; None without scores."""
        from videoalign.preferences import weighted_reward

        if self.scores_a is None or self.scores_b is None:
            return None
        w = weights or self.weights or {d: 1.0 for d in DIMS}
        return weighted_reward(self.scores_a, w), weighted_reward(self.scores_b, w)

    def preferred(self) -> int:
        """By its labels: 1 when A is preferred, -1 for B, 0 for neither: the Overall label when there is one, else
        the majority of the dimension labels. (Relabel's pairs need no labels: their chosen side is A.)"""
        overall = self.labels.get("Overall", INVALID)
        if overall != INVALID:
            return overall
        votes = sum(v for k, v in self.labels.items() if k != "Overall" and v != INVALID)
        return (votes > 0) - (votes < 0)

    def swapped(self) -> Pair:
        """The same pair with the sides exchanged (labels negated)."""
        flip = {k: (-v if v != INVALID else v) for k, v in self.labels.items()}
        return replace(self, video_a=self.video_b, video_b=self.video_a, path_a=self.path_b, path_b=self.path_a,
                       labels=flip, scores_a=self.scores_b, scores_b=self.scores_a,
                       num_frames_a=self.num_frames_b, num_frames_b=self.num_frames_a)


@dataclass
class PairFile:
    """What `read_pairs` found: the usable pairs, one problem line per skipped row, the dimensions read, the file's
    kind ("csv", "jsonl" or "votes") and how many rows repeat an earlier row (kept)."""

    pairs: list[Pair]
    problems: list[str]
    dims: list[str]
    kind: str
    repeated: int = 0

    def note(self) -> str:
        """", N repeated rows kept" for a run's data report ("" when no row repeats)."""
        return f", {self.repeated} repeated rows kept" if self.repeated else ""


def read_pairs(source: str | Path, videos_root: str | Path | None = None, dims: list[str] | None = None, *,
               check_videos: bool = True, text: str | None = None) -> PairFile:
    """Read a pair file (module docstring). `dims`: the dimensions to label, in this order; None = every dimension
    the file has (a CSV's label columns, a JSONL's label or score keys); [] = none (labels not needed). A CSV that
    lacks a requested dimension's column is a DataError. `text` reads that content instead of the file (stdin), with
    paths relative to videos_root or the working directory."""
    path = Path(source)
    if text is None:
        text = read_pair_text(path)
        root = Path(videos_root) if videos_root else path.parent
    else:
        root = Path(videos_root) if videos_root else Path.cwd()
    if text.lstrip()[:1] == "{":
        kind, rows = "jsonl", json_lines(text)
        columns = [c for _, r in rows if isinstance(r, dict) for c in r]
    else:
        kind, (columns, rows) = "csv", _csv_rows(text)
    if {"left_video", "right_video", "vote_type"} <= set(columns):
        kind = "votes"
    elif kind == "csv":
        missing = [c for c in ("path_A", "path_B", "prompt") if c not in columns]
        if missing:
            raise DataError(f"{path}: needs the columns path_A,path_B,prompt and one label column per dimension "
                            f"(or relabel's pairs JSONL); missing {','.join(missing)}")
    dims = _dims(path, kind, columns, rows, dims)
    parse = {"csv": _csv_pair, "jsonl": _jsonl_pair, "votes": _vote_pair}[kind]
    pairs, problems = [], []
    for n, row in rows:
        where = f"{path} line {n}"
        try:
            pair = parse(row, root, n, dims)
        except (DataError, KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"{where}: {_reason(exc)}")
            continue
        if dims and all(v == INVALID for v in pair.dim_labels(dims)) and \
                pair.labels.get("Overall", INVALID) == INVALID:
            problems.append(f"{where}: no usable label for {', '.join(dims)}; use A, B or same (CSV) or "
                            "chosen, rejected or tie (JSONL)")
            continue
        if check_videos and (missing := [str(p) for p in (pair.path_a, pair.path_b) if not p.is_file()]):
            problems.append(f"{where}: missing video {', '.join(missing)}; fix the path or drop the line")
            continue
        pairs.append(pair)
    seen = Counter((str(p.path_a), str(p.path_b), p.prompt) for p in pairs)
    return PairFile(pairs, problems, list(dims), kind, sum(c - 1 for c in seen.values()))


# -- rows ------------------------------------------------------------------------------------------------------

def read_pair_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: no such file; pass relabel's pairs JSONL or a pair CSV")
    return path.read_text(encoding="utf-8-sig")


def _csv_rows(text: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """(the header's columns, [(line number, row with stripped keys and cells)])."""
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    rows = []
    for row in reader:
        rows.append((reader.line_num, {(k or "").strip(): (v or "").strip() if isinstance(v, str) else ""
                                       for k, v in row.items()}))
    return columns, rows


def _dims(path: Path, kind: str, columns: list[str], rows, dims) -> list[str]:
    if kind == "votes":
        return []
    if dims is not None:
        if kind == "csv" and (absent := [d for d in dims if d not in columns]):
            raise DataError(f"{path}: no label column for {', '.join(absent)}; add one column per dimension with "
                            "labels A, B or same, or choose the dimensions the file has")
        return list(dims)
    if kind == "csv":
        found = [c for c in dict.fromkeys(columns) if is_dimension(c)]
        return found
    found: dict[str, None] = {}
    for _, row in rows:
        if isinstance(row, dict):
            labels = row.get("labels") if isinstance(row.get("labels"), dict) else None
            scores = row.get("scores", {}).get("chosen") if isinstance(row.get("scores"), dict) else None
            for key in (labels or scores or {}):
                if key not in (REWARD, "Overall"):
                    found.setdefault(key)
    return list(found)


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}; each line needs prompt, chosen and rejected"
    return str(exc) or type(exc).__name__


def _resolve(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def _label(value, table, what: str) -> int:
    label = label_of(value, table)
    if label is None:
        raise DataError(f"{what} label {value!r} is unknown; use {', '.join(k for k in table if k)}")
    return label


def _csv_pair(row: dict, root: Path, n: int, dims) -> Pair:
    for column in ("path_A", "path_B", "prompt"):
        if not row.get(column):
            raise DataError(f"empty {column}; a pair CSV needs path_A,path_B,prompt and label columns")
    labels = {d: _label(row.get(d, ""), CELLS, d) for d in dims}
    if row.get("Overall"):
        labels["Overall"] = _label(row["Overall"], CELLS, "Overall")

    def frames(key):
        value = row.get(key)
        return int(float(value)) if value else None

    a, b = row["path_A"], row["path_B"]
    return Pair(n, row["prompt"], a, b, _resolve(root, a), _resolve(root, b), labels,
                num_frames_a=frames("num_frames_A"), num_frames_b=frames("num_frames_B"), group=row.get("group") or None)


def _jsonl_pair(row, root: Path, n: int, dims) -> Pair:
    if isinstance(row, Exception):
        raise DataError(f"not valid JSON ({row.msg} at column {row.colno})")
    if not isinstance(row, dict):
        raise DataError("not a JSON object")
    if "error" in row and "chosen" not in row:
        raise DataError(f"relabel could not score {row.get('video', 'a video')} ({row['error']})")
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError("empty prompt")
    a, b = row["chosen"], row["rejected"]
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        raise DataError("chosen and rejected must be video paths")
    scores = row.get("scores")
    sa = sb = None
    if isinstance(scores, dict):
        sa, sb = scores["chosen"], scores["rejected"]
    given = row.get("labels")
    labels: dict[str, int] = {}
    if isinstance(given, dict):
        for d in dims:
            labels[d] = _label(given[d], SIDES, d) if d in given else INVALID
        for key in (REWARD, "Overall"):  # the weighted-reward label (older relabel files call it Overall)
            if key in given:
                labels[REWARD] = _label(given[key], SIDES, key)
    elif sa is not None:
        for d in dims:
            try:
                diff = float(sa[d]) - float(sb[d])
            except (KeyError, TypeError, ValueError):
                labels[d] = INVALID
                continue
            labels[d] = 1 if diff > 0 else -1 if diff < 0 else 0 if diff == 0 else INVALID
    elif dims:
        raise DataError("no labels and no scores; run videoalign relabel on the pairs first")
    weights = row.get("weights") if isinstance(row.get("weights"), dict) else None
    group = row.get("group")
    return Pair(n, prompt, a, b, _resolve(root, a), _resolve(root, b), labels, sa, sb, weights,
                group=str(group) if group is not None else None)


def _vote_pair(row, root: Path, n: int, dims) -> Pair:
    if isinstance(row, Exception) or not isinstance(row, dict):
        raise DataError("not a JSON object")
    a, b = str(row.get("left_video") or ""), str(row.get("right_video") or "")
    if not a or not b:
        raise DataError("empty left_video or right_video")
    prompt = row.get("prompt") or row.get("text") or ""
    if not str(prompt).strip():
        raise DataError("empty prompt")
    label = _label(row.get("vote_type"), VOTES, "vote_type")
    return Pair(n, str(prompt), a, b, _resolve(root, a), _resolve(root, b), {"Overall": label})


def read_preferences(source: str | Path, videos_root: str | Path | None = None, text: str | None = None) -> PairFile:
    """The pairs of a pair file oriented chosen = A, rejected = B (Pair.preferred), for Flow-DPO and Flow-RWR: a
    pair with no preferred side (a CSV tie) is a problem. Relabel's JSONL needs no labels (its chosen side is A);
    a CSV's labels decide. `text`: the file's content when the caller has read it already."""
    import re

    path = Path(source)
    text = read_pair_text(path) if text is None else text
    jsonl = text.lstrip()[:1] == "{"
    found = read_pairs(path, videos_root or path.parent, [] if jsonl else None, text=text)
    oriented, problems = [], list(found.problems)
    for pair in found.pairs:
        side = 1 if jsonl else pair.preferred()
        if side == 0:
            problems.append(f"{source} line {pair.line}: a tie (no preferred side); Flow-DPO needs a chosen and a "
                            "rejected video")
            continue
        oriented.append(pair if side > 0 else pair.swapped())
    line = re.compile(r" line (\d+): ")
    found.problems = sorted(problems, key=lambda p: int(m.group(1)) if (m := line.search(p)) else 0)
    found.pairs = oriented
    return found
