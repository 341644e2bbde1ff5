"""Scored videos -> preference pairs: pairing within groups, per-dimension labels, weighted margins. Pure.

A pair is oriented so that `chosen` has the higher reward r = sum_d w_d s_d / sum_d w_d (the paper's weighted
reward: (VQ + MQ + TA)/3 for weights 1:1:1; TA alone for 0:0:1; not `Overall`, the reference's sum of the
dimensions: docs/numerics.md, Overall and reward). For each dimension d the label is `chosen` when
s_d(chosen) - s_d(rejected) > tie_threshold, `rejected` when it is < -tie_threshold, and `tie` otherwise; the
`reward` label is `chosen` or `tie` on the reward margin r(chosen) - r(rejected) (>= 0 by orientation).

Output records (one JSON line each; the input format of `videoalign dpo` and `videoalign rwr`):
    {"prompt", "group", "chosen", "rejected",                 # video paths (absolute)
     "scores": {"chosen": {dim: s, ...}, "rejected": {...}},  # the scores used (normalised unless --raw)
     "labels": {dim: "chosen"|"rejected"|"tie", ..., "reward": "chosen"|"tie"},
     "margin": r(chosen) - r(rejected), "weights": {dim: w}}
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal

Pairing = Literal["all", "best-worst"]


def parse_weights(text: str, dims: list[str]) -> dict[str, float]:
    """`"1:1:1"` -> {VQ: 1, MQ: 1, TA: 1} in `dims` order; also accepts `VQ=0.1,MQ=0.1,TA=0.8`."""
    text = text.strip()
    if "=" in text:
        parts = dict(p.split("=", 1) for p in text.replace(":", ",").split(",") if p.strip())
        unknown = sorted(set(parts) - set(dims))
        if unknown:
            raise ValueError(f"--weights names unknown dimensions {', '.join(unknown)}; use {', '.join(dims)}")
        values = [float(parts.get(d, 0.0)) for d in dims]
    else:
        pieces = [p for p in text.split(":")]
        if len(pieces) != len(dims):
            raise ValueError(f"--weights {text!r} needs {len(dims)} values as {':'.join(dims)}, e.g. 1:1:1")
        try:
            values = [float(p) for p in pieces]
        except ValueError:
            raise ValueError(f"--weights {text!r}: values must be numbers, e.g. 0.1:0.1:0.8") from None
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"--weights {text!r}: weights must be >= 0 with a positive sum")
    return dict(zip(dims, values))


def weighted_reward(scores: dict[str, float], weights: dict[str, float]) -> float:
    """r = sum_d w_d s_d / sum_d w_d."""
    return sum(weights[d] * scores[d] for d in weights) / sum(weights.values())


def label_pair(chosen: dict[str, float], rejected: dict[str, float], weights: dict[str, float],
               tie_threshold: float) -> tuple[dict[str, str], float]:
    """Per-dimension labels and the `reward` label for an oriented pair, plus the reward margin."""
    labels = {}
    for dim in weights:
        diff = chosen[dim] - rejected[dim]
        labels[dim] = "chosen" if diff > tie_threshold else "rejected" if diff < -tie_threshold else "tie"
    margin = weighted_reward(chosen, weights) - weighted_reward(rejected, weights)
    labels["reward"] = "chosen" if margin > tie_threshold else "tie"
    return labels, margin


def make_pair(a: dict, b: dict, weights: dict[str, float], tie_threshold: float, group: str | None) -> dict:
    """Orient two scored records (dicts with `path`, `prompt` and dimension scores) into a pair record."""
    dims = list(weights)
    ra, rb = weighted_reward(a, weights), weighted_reward(b, weights)
    chosen, rejected = (a, b) if ra >= rb else (b, a)
    cs = {d: float(chosen[d]) for d in dims}
    rs = {d: float(rejected[d]) for d in dims}
    labels, margin = label_pair(cs, rs, weights, tie_threshold)
    return {
        "prompt": chosen["prompt"],
        "group": group,
        "chosen": chosen["path"],
        "rejected": rejected["path"],
        "scores": {"chosen": cs, "rejected": rs},
        "labels": labels,
        "margin": margin,
        "weights": dict(weights),
    }


def pair_group(records: list[dict], weights: dict[str, float], pairing: Pairing, tie_threshold: float,
               group: str | None) -> list[dict]:
    """All unordered pairs of a group (input order), or its best against its worst by weighted reward."""
    if len(records) < 2:
        return []
    if pairing == "all":
        return [make_pair(a, b, weights, tie_threshold, group) for a, b in combinations(records, 2)]
    if pairing == "best-worst":
        ranked = sorted(records, key=lambda r: weighted_reward(r, weights))  # stable: ties keep input order
        return [make_pair(ranked[-1], ranked[0], weights, tie_threshold, group)]
    raise ValueError(f"pairing {pairing!r} is unknown; use all or best-worst")
