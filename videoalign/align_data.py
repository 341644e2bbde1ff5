"""Training records of the alignment commands: preference pairs (dpo, rwr) and rewarded videos (rwr).

Readers return (records, problems): a line that is malformed, names a missing video or cannot be labelled is
reported as "<file> line N: ..." and skipped, so one bad line never stops a run. Inputs:
- relabel's pair JSONL: {"prompt", "chosen", "rejected", "scores": {"chosen": {...}, "rejected": {...}},
  "weights": {...}, ...}; lines with "error" (videos relabel could not score) are skipped and counted.
- the reference pair CSV: path_A,path_B,prompt,<labels A/B/same per dimension>[,Overall]. The chosen side is the
  `Overall` label when the file has one, else the majority over the dimension labels; ties are skipped.
- score's JSONL (rwr only): {"video", "path", "prompt", "VQ", "MQ", "TA", ...} per video.
Paths resolve against `videos_root`, else the file's folder; relabel writes absolute paths.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from videoalign.data import DataError
from videoalign.preferences import weighted_reward

DIMS = ("VQ", "MQ", "TA")
_SIDE = {"A": 1, "B": -1, "same": 0}


@dataclass
class PreferencePair:
    line: int
    prompt: str
    chosen: Path
    rejected: Path
    #: weighted rewards of the two sides (None when the file has labels only, e.g. a reference pair CSV)
    reward_chosen: float | None = None
    reward_rejected: float | None = None


@dataclass
class RewardedVideo:
    line: int
    prompt: str
    path: Path
    reward: float | None
    chosen: bool = True  # False for the rejected side of a pair (dropped by `chosen_only`)


def _resolve(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def _lines(path: Path) -> tuple[str, list[tuple[int, object]]]:
    """("jsonl" | "csv", [(line number, row or parse error)])."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the data path in the recipe")
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip()[:1] == "{":
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as exc:
                    rows.append((n, exc))
        return "jsonl", rows
    return "csv", list(enumerate(csv.DictReader(io.StringIO(text)), start=2))


def read_preference_pairs(source: str | Path, videos_root: str | Path | None = None,
                          weights: dict[str, float] | None = None) -> tuple[list[PreferencePair], list[str]]:
    """Pairs from relabel's JSONL or a reference pair CSV. `weights` re-weights the JSONL's scores into the
    rewards (default: the weights each line was labelled with, else 1:1:1)."""
    path = Path(source)
    kind, rows = _lines(path)
    root = Path(videos_root) if videos_root else path.parent
    pairs, problems = [], []
    for n, row in rows:
        where = f"{path} line {n}"
        try:
            pair = _jsonl_pair(row, root, weights, n) if kind == "jsonl" else _csv_pair(row, root, n)
        except (DataError, KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"{where}: {_reason(exc)}")
            continue
        if pair is None:
            continue
        missing = [str(p) for p in (pair.chosen, pair.rejected) if not p.is_file()]
        if missing:
            problems.append(f"{where}: missing video {', '.join(missing)}; fix the path or drop the line")
            continue
        pairs.append(pair)
    return pairs, problems


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}; each line needs prompt, chosen and rejected"
    return str(exc) or type(exc).__name__


def _pair_row_prompt(row) -> str:
    """The prompt of a relabel pair line, after the checks every pair line needs (DataError otherwise)."""
    if isinstance(row, Exception):
        raise DataError(f"not valid JSON ({row.msg} at column {row.colno})")
    if not isinstance(row, dict):
        raise DataError("not a JSON object")
    if "error" in row and "chosen" not in row:
        raise DataError(f"relabel could not score {row.get('video', 'a video')} ({row['error']})")
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError("empty prompt")
    return prompt


def _jsonl_pair(row, root: Path, weights, n: int) -> PreferencePair:
    prompt = _pair_row_prompt(row)
    rewards = [None, None]
    scores = row.get("scores")
    if scores:
        w = weights or row.get("weights") or {d: 1.0 for d in DIMS}
        rewards = [weighted_reward(scores[side], w) for side in ("chosen", "rejected")]
    return PreferencePair(n, prompt, _resolve(root, row["chosen"]), _resolve(root, row["rejected"]), *rewards)


def _csv_pair(row: dict, root: Path, n: int) -> PreferencePair | None:
    row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
    for column in ("path_A", "path_B", "prompt"):
        if not row.get(column):
            raise DataError(f"empty {column}; a pair CSV needs path_A,path_B,prompt and label columns")
    if row.get("Overall"):
        labels = [row["Overall"]]
    else:
        labels = [row[d] for d in DIMS if row.get(d)]
    unknown = [label for label in labels if label not in _SIDE]
    if unknown or not labels:
        raise DataError(f"label {unknown[0]!r} is unknown; use A, B or same" if unknown else
                        "no label; fill Overall or the VQ, MQ, TA columns with A, B or same")
    vote = sum(_SIDE[label] for label in labels)
    if vote == 0:
        raise DataError("a tie (no preferred side); DPO needs a chosen and a rejected video")
    a, b = _resolve(root, row["path_A"]), _resolve(root, row["path_B"])
    chosen, rejected = (a, b) if vote > 0 else (b, a)
    return PreferencePair(n, row["prompt"], chosen, rejected)


def read_rewarded_videos(source: str | Path, videos_root: str | Path | None = None,
                         weights: dict[str, float] | None = None,
                         need_rewards: bool = True) -> tuple[list[RewardedVideo], list[str]]:
    """Videos with rewards, from a pair file (both sides, `chosen` marks the preferred one) or score's JSONL
    (every video; reward = the weighted normalised scores). need_rewards=False accepts a label-only pair CSV
    (uniform weighting)."""
    path = Path(source)
    kind, rows = _lines(path)
    # a pair file if any line looks like a pair: a first line that lacks "chosen" must stay one problem
    if kind == "csv" or any(isinstance(r, dict) and ("chosen" in r or "rejected" in r) for _, r in rows):
        pairs, problems = read_preference_pairs(path, videos_root, weights)
        if need_rewards:
            unscored = [p for p in pairs if p.reward_chosen is None]
            if unscored and len(unscored) == len(pairs):
                raise DataError(f"{path}: has labels but no scores; run videoalign relabel on it first, or use "
                                "weighting uniform")
            problems += [f"{path} line {p.line}: no scores; rerun videoalign relabel on it" for p in unscored]
            pairs = [p for p in pairs if p.reward_chosen is not None]
        videos = []
        for p in pairs:
            videos.append(RewardedVideo(p.line, p.prompt, p.chosen, p.reward_chosen, True))
            videos.append(RewardedVideo(p.line, p.prompt, p.rejected, p.reward_rejected, False))
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
            video = _resolve(root, row.get("path") or row["video"])
            reward = weighted_reward(row, w)
            prompt = row["prompt"]
        except (KeyError, TypeError) as exc:
            problems.append(f"{where}: missing field {exc}; score records need video, prompt and "
                            f"{', '.join(w)}")
            continue
        if not video.is_file():
            problems.append(f"{where}: missing video {video}; fix the path or drop the line")
            continue
        videos.append(RewardedVideo(n, prompt, video, float(reward)))
    return videos, problems


# -- per-dimension labels (train-latent-rm) ---------------------------------------------------------------------

#: relabel's per-dimension label (relative to its chosen = side A) -> loss label (losses.py: 1 A, -1 B, 0 tie)
_RELABEL_SIDE = {"chosen": 1, "rejected": -1, "tie": 0}


@dataclass
class LabelledPair:
    """A pair with one label per reward dimension, in losses.py's convention: 1 = A better, -1 = B better,
    0 = tie, 22 = no usable label (masked by the loss, left out of accuracies)."""

    line: int
    prompt: str
    path_a: Path
    path_b: Path
    labels: list[int]


def read_labelled_latent_pairs(source: str | Path, videos_root: str | Path | None = None,
                               dims: list[str] | tuple[str, ...] = DIMS) -> tuple[list[LabelledPair], list[str]]:
    """Pairs with per-dimension labels (in `dims` order) from relabel's JSONL or a reference pair CSV.

    JSONL: A = "chosen", B = "rejected"; labels from "labels" {dim: chosen|rejected|tie}; a line without "labels"
    takes them from the sign of "scores" chosen - rejected (equal scores = tie). CSV: path_A, path_B, prompt and
    a column per dimension with A, B or same. A missing or unknown label is 22 (masked); a line with no usable
    label at all, a malformed line or a missing video is a problem "<file> line N: ..." and is skipped.
    """
    from videoalign.losses import INVALID

    path = Path(source)
    kind, rows = _lines(path)
    root = Path(videos_root) if videos_root else path.parent
    pairs, problems = [], []
    for n, row in rows:
        where = f"{path} line {n}"
        try:
            pair = (_jsonl_labelled(row, root, n, dims) if kind == "jsonl" else _csv_labelled(row, root, n, dims))
        except (DataError, KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"{where}: {_reason(exc)}")
            continue
        if all(label == INVALID for label in pair.labels):
            problems.append(f"{where}: no usable label for {', '.join(dims)}; use chosen/rejected/tie (JSONL) or "
                            "A/B/same (CSV)")
            continue
        missing = [str(p) for p in (pair.path_a, pair.path_b) if not p.is_file()]
        if missing:
            problems.append(f"{where}: missing video {', '.join(missing)}; fix the path or drop the line")
            continue
        pairs.append(pair)
    return pairs, problems


def _jsonl_labelled(row, root: Path, n: int, dims) -> LabelledPair:
    from videoalign.losses import INVALID

    prompt = _pair_row_prompt(row)
    a, b = _resolve(root, row["chosen"]), _resolve(root, row["rejected"])
    given = row.get("labels")
    if isinstance(given, dict):
        labels = [_RELABEL_SIDE.get(given.get(d), INVALID) if isinstance(given.get(d), str) else INVALID
                  for d in dims]
    elif isinstance(row.get("scores"), dict):
        sc, sr = row["scores"].get("chosen") or {}, row["scores"].get("rejected") or {}
        labels = []
        for d in dims:
            try:
                diff = float(sc[d]) - float(sr[d])
            except (KeyError, TypeError, ValueError):
                labels.append(INVALID)
                continue
            labels.append(1 if diff > 0 else -1 if diff < 0 else 0 if diff == 0 else INVALID)
    else:
        raise DataError("no labels and no scores; run videoalign relabel on the pairs first")
    return LabelledPair(n, prompt, a, b, labels)


def _csv_labelled(row: dict, root: Path, n: int, dims) -> LabelledPair:
    from videoalign.losses import labels_from_strings

    row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
    for column in ("path_A", "path_B", "prompt"):
        if not row.get(column):
            raise DataError(f"empty {column}; a pair CSV needs path_A,path_B,prompt and label columns")
    labels = labels_from_strings([row.get(d, "") for d in dims]).tolist()
    return LabelledPair(n, row["prompt"], _resolve(root, row["path_A"]), _resolve(root, row["path_B"]), labels)
