"""Pairwise preference metrics: accuracy without and with ties (docs/numerics.md, Accuracy with and without ties), win rates (10.9). Pure.

Notation: one entry per pair; h is the human label (1 = A better, -1 = B better, 0 = tie, NaN = label not
mappable) and m = s_A - s_B is the model's margin. For a threshold eps the model predicts a tie iff |m| <= eps.
Each pair falls in exactly one class, tested in this order:

    T_hm: h == 0 and |m| <= eps      T_h: h == 0          T_m: |m| <= eps
    C:    h * m > 0                  D:   everything else (wrong sign, m == 0 exactly, NaN label or NaN margin)

So a NaN label is never a human tie: it is a pair the model can only get wrong (D, or T_m once tied).

- `accuracy_without_ties` (9.3): C / (C + D) at eps = -inf over the pairs with h != 0 (NaN labels included).
- `accuracy_with_ties` (9.4, Deutsch et al. 2023 "Ties Matter", Algorithm 1):
  acc(eps) = (C + T_hm) / (C + D + T_h + T_m + T_hm), maximised over eps in {-inf} U {distinct |m_i|}.
  The denominator is always N, so moving a pair into its tie class changes the numerator by +1 (human tie: T_h ->
  T_hm), -1 (correct: C -> T_m) or 0 (wrong: D -> T_m). Sorting by |m| and moving each whole group of equal |m|
  at once gives every acc(eps) from one cumulative sum: O(N log N). `tie_accuracy_curve` returns that curve.
- `*_compat` (9.5): the reference's `calc_accuracy.py`, which produced the published numbers. It never evaluates
  eps = -inf, and it moves one pair at a time, so inside a run of equal |m| it also scores partial states that no
  threshold produces (and which depend on the input order). Identical to the exact metric for continuous scores
  up to these two effects.
- `win_tie_loss` (10.9): model A against model B on the same prompts and seeds, one score pair per video: wins
  a - b > t, ties |a - b| <= t, losses a - b < -t; win_rate = (wins + ties / 2) / n, so a model against itself
  scores exactly 0.5 (the paper's 50 / 50 / 50 for the pretrained model).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


class TieResult(NamedTuple):
    """Accuracy with ties and where it was reached."""

    accuracy: float
    """max over eps of acc(eps), in [0, 1]; NaN for no pairs (exact) or -inf (compat)."""
    threshold: float
    """eps* reaching it: a |m| value, or -inf when predicting no ties is best (the smallest such eps on a tie)."""
    human_tie_rate: float
    """fraction of all pairs with h == 0 (NaN-labelled pairs count as pairs, not as ties)."""
    pairs: int
    """number of pairs N, NaN-labelled ones included."""


def _as_arrays(human: Sequence[float], margin: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(N,) float arrays; human labels must be 1, -1, 0 or NaN (None becomes NaN)."""
    h = np.asarray(human, dtype=np.float64).reshape(-1)
    m = np.asarray(margin, dtype=np.float64).reshape(-1)
    if h.shape != m.shape:
        raise ValueError(f"human and margin must have the same length; got {h.size} and {m.size}")
    bad = ~(np.isnan(h) | (h == 1) | (h == -1) | (h == 0))
    if bad.any():
        raise ValueError(f"human labels must be 1, -1, 0 or NaN; got {sorted(set(h[bad].tolist()))[:5]}. "
                         "Map INVALID labels (videoalign.labels) to NaN.")
    return h, m


def accuracy_without_ties(human: Sequence[float], margin: Sequence[float]) -> float:
    """C / (C + D) over the pairs with h != 0 (docs/numerics.md, Accuracy with and without ties).

    C: h * m > 0. D: everything else, i.e. wrong sign, m == 0 exactly, NaN label or NaN margin. Pairs with h == 0
    are left out; pairs with a NaN label stay in (as D). NaN when no pair has h != 0.

    Args:
        human: (N,) labels in {1, -1, 0, NaN}.
        margin: (N,) model margins s_A - s_B.
    """
    h, m = _as_arrays(human, margin)
    kept = h != 0  # NaN != 0 is True: NaN labels stay in the denominator
    n = int(kept.sum())
    if n == 0:
        return math.nan
    return int((h[kept] * m[kept] > 0).sum()) / n


def _tie_states(h: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every threshold of Algorithm 1 and its numerator C + T_hm: eps = [-inf, distinct |m| ascending] (K + 1,).

    The denominator is always N. A pair with a NaN margin is never a model tie (|m| <= eps is false).
    """
    human_tie = h == 0
    correct = (h * m > 0) & ~human_tie  # class C at eps = -inf
    base = int(correct.sum())  # numerator C + T_hm at eps = -inf (T_hm = 0)
    # numerator change when the pair becomes a model tie: +1 T_h -> T_hm, -1 C -> T_m, 0 D -> T_m
    delta = human_tie.astype(np.int64) - correct.astype(np.int64)  # (N,)
    size = np.abs(m)
    finite = ~np.isnan(size)
    size, delta = size[finite], delta[finite]
    order = np.argsort(size, kind="stable")
    size, delta = size[order], delta[order]
    numerators = base + np.cumsum(delta)  # (N',) state after tying pairs 0..k
    group_end = np.ones(size.size, dtype=bool)
    group_end[:-1] = size[1:] != size[:-1]  # move each run of equal |m| as a whole
    thresholds = np.concatenate([[-math.inf], size[group_end]])
    return thresholds, np.concatenate([[base], numerators[group_end]]).astype(np.int64)


def accuracy_with_ties(human: Sequence[float], margin: Sequence[float]) -> TieResult:
    """Exact accuracy with ties (docs/numerics.md, Accuracy with and without ties; Deutsch et al. 2023, Algorithm 1), O(N log N).

    acc(eps) = (C + T_hm) / N for eps in {-inf} U {distinct |m_i|}; returns the max and the smallest eps reaching
    it. A pair with a NaN margin is never a model tie. With finite margins the result is >= the human tie rate
    (eps = max |m| ties every pair). Empty input gives accuracy NaN.

    Args:
        human: (N,) labels in {1, -1, 0, NaN}.
        margin: (N,) model margins s_A - s_B.
    """
    h, m = _as_arrays(human, margin)
    n = h.size
    if n == 0:
        return TieResult(math.nan, math.nan, math.nan, 0)
    thresholds, numerators = _tie_states(h, m)
    best = int(np.argmax(numerators))  # first maximum: the smallest eps
    return TieResult(int(numerators[best]) / n, float(thresholds[best]), int((h == 0).sum()) / n, n)


def accuracy_figures(human: Sequence[float], margin: Sequence[float], compat: bool = False) -> dict:
    """The accuracy figures every output reports under these keys (docs/formats.md): accuracy_without_ties,
    accuracy_with_ties, tie_threshold, human_tie_rate and pairs. The exact tie sweep, or the reference's
    calc_accuracy.py with `compat`. JSON has no infinity: a tie threshold that is not finite is None, with a
    `tie_threshold_note` saying why (-inf: predicting no ties is best; NaN: no pairs)."""
    tied = (accuracy_with_ties_compat if compat else accuracy_with_ties)(human, margin)
    figures = {"accuracy_without_ties": accuracy_without_ties(human, margin), "accuracy_with_ties": tied.accuracy,
               "tie_threshold": tied.threshold, "human_tie_rate": tied.human_tie_rate, "pairs": tied.pairs}
    if not math.isfinite(tied.threshold):
        figures["tie_threshold"] = None
        figures["tie_threshold_note"] = ("-inf: the best threshold predicts no ties" if tied.threshold == -math.inf
                                         else "undefined: no pairs")
    return figures


def tie_accuracy_curve(human: Sequence[float], margin: Sequence[float]) -> tuple[list[float], list[float]]:
    """acc(eps) of `accuracy_with_ties` as a step function over eps >= 0, for plotting (`where="post"`).

    Returns (thresholds, accuracies): the finite distinct |m| ascending, each with the accuracy that holds from it
    up to the next. When min |m| > 0 the no-tie accuracy (eps = -inf, equal to acc(0)) is prepended at eps = 0.
    Empty lists for empty input.
    """
    h, m = _as_arrays(human, margin)
    if h.size == 0:
        return [], []
    thresholds, numerators = _tie_states(h, m)
    accuracy = numerators / h.size
    keep = np.isfinite(thresholds)
    if thresholds.size == 1 or thresholds[1] > 0:  # no pair has m == 0: acc(0) = acc(-inf)
        thresholds[0] = 0.0
        keep[0] = True
    return thresholds[keep].tolist(), accuracy[keep].tolist()


# --- compat: the reference's calc_accuracy.py (docs/numerics.md, Accuracy with and without ties) ---------------------------------------------

def _ref_class(hi: Any, mi: Any, eps: Any, strict: bool) -> str:
    """The reference's class of one pair, with its tests in its order and on the raw values (Python semantics)."""
    tied = abs(mi) < eps if strict else abs(mi) <= eps
    if hi == 0 and tied:
        return "Thm"
    if hi == 0:
        return "Th"
    if tied:
        return "Tm"
    if hi * mi > 0:
        return "C"
    return "D"


def accuracy_without_ties_compat(human: Sequence[Any], margin: Sequence[Any]) -> float:
    """The reference's accuracy without ties: C / (C + D + T_m) at eps = -1, where T_m = 0. Equals
    `accuracy_without_ties` (NaN labels and m == 0 count as D). Where the reference divides by zero (no pair with
    h != 0) this returns NaN. Values are used as given (no validation), like the reference.
    """
    h, m = list(human), list(margin)
    if len(h) != len(m):
        raise ValueError(f"human and margin must have the same length; got {len(h)} and {len(m)}")
    counts = {"C": 0, "D": 0, "Th": 0, "Tm": 0, "Thm": 0}
    for hi, mi in zip(h, m):
        counts[_ref_class(hi, mi, -1, strict=False)] += 1
    denominator = counts["C"] + counts["D"] + counts["Tm"]
    return counts["C"] / denominator if denominator else math.nan


def accuracy_with_ties_compat(human: Sequence[Any], margin: Sequence[Any]) -> TieResult:
    """The reference's accuracy with ties (`calc_accuracy_with_ties`, docs/numerics.md, Accuracy with and without ties), for published numbers.

    1. Start from the eps = -1 statistics (no model ties); best = -inf.
    2. Stable-sort the pairs by |m| (Python's `sorted`, input order kept within equal |m|).
    3. For each pair in turn, move only that pair from its non-tie class to its tie class (eps = its |m|), compute
       acc = (C + T_hm) / (C + D + T_h + T_m + T_hm), and keep it if strictly greater than the best so far.
    4. Any exception inside gives accuracy 0 (with a warning; the reference prints); empty input gives -inf.

    Differences from `accuracy_with_ties`: the no-tie state (eps = -inf) is never scored, and within a run of equal
    |m| the partial states (some pairs of the run tied, others not) are scored too, so the result depends on the
    input order. `threshold` is the |m| of the pair at the best state (NaN for empty input or an exception);
    `human_tie_rate` counts `h == 0`. A length mismatch raises ValueError (the reference's zip would silently
    truncate).
    """
    h, m = list(human), list(margin)
    if len(h) != len(m):
        raise ValueError(f"human and margin must have the same length; got {len(h)} and {len(m)}")
    n = len(h)
    if n == 0:
        return TieResult(-math.inf, math.nan, math.nan, 0)
    try:
        tie_rate = sum(1 for hi in h if hi == 0) / n
        counts = {"C": 0, "D": 0, "Th": 0, "Tm": 0, "Thm": 0}
        for hi, mi in zip(h, m):
            counts[_ref_class(hi, mi, -1, strict=False)] += 1
        best, best_eps = -math.inf, math.nan
        eps = -1
        for hi, mi in sorted(zip(h, m), key=lambda pair: abs(pair[1])):
            counts[_ref_class(hi, mi, eps, strict=True)] -= 1  # the reference removes with < and the previous eps
            eps = abs(mi)
            counts[_ref_class(hi, mi, eps, strict=False)] += 1
            acc = (counts["C"] + counts["Thm"]) / (
                counts["C"] + counts["D"] + counts["Th"] + counts["Tm"] + counts["Thm"])
            if acc > best:
                best, best_eps = acc, eps
        return TieResult(best, float(best_eps), tie_rate, n)
    except Exception as error:
        warnings.warn(f"accuracy_with_ties_compat: {error!r}; returning 0 as the reference does", stacklevel=2)
        return TieResult(0.0, math.nan, math.nan, n)


class WinTieLoss(NamedTuple):
    """Counts of one side against the other over n paired scores (`win_tie_loss`)."""

    wins: int
    ties: int
    losses: int

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> float:
        """(wins + ties / 2) / n: a tie counts half, so equal models score 0.5 (the paper's 50 for the pretrained
        model, docs/numerics.md, Win rates); NaN for n = 0."""
        return (self.wins + self.ties / 2) / self.n if self.n else math.nan

    def as_dict(self) -> dict[str, float]:
        """wins, ties, losses, n, their shares win/tie/loss (fractions of n, summing to 1) and win_rate."""
        share = (lambda k: k / self.n) if self.n else (lambda k: math.nan)
        return {"wins": self.wins, "ties": self.ties, "losses": self.losses, "n": self.n, "win": share(self.wins),
                "tie": share(self.ties), "loss": share(self.losses), "win_rate": self.win_rate}


def win_tie_loss(a_scores: Sequence[float], b_scores: Sequence[float], tie_threshold: float = 0.0) -> WinTieLoss:
    """Count the pairs where A wins (a - b > t), ties (|a - b| <= t) and loses (a - b < -t).

    With t = 0 only exact equality is a tie. Golden example: a = [3, 1, 2, 2.5], b = [1, 2, 2, 1]
    -> a - b = [2, -1, 0, 1.5] -> wins 2, ties 1, losses 1 -> win_rate = (2 + 1/2) / 4 = 0.625.

    Args:
        a_scores, b_scores: (N,) scores of the two sides (A: e.g. the aligned model, B: the base); NaN is an error.
        tie_threshold: t >= 0.
    """
    if not tie_threshold >= 0:  # also refuses NaN
        raise ValueError(f"tie_threshold must be >= 0; got {tie_threshold}")
    a = np.asarray(a_scores, dtype=np.float64).reshape(-1)
    b = np.asarray(b_scores, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"a_scores and b_scores must have the same length; got {a.size} and {b.size}")
    diff = a - b  # (N,)
    if np.isnan(diff).any():
        raise ValueError("win_tie_loss: a score is NaN (or both sides are the same infinity); drop those pairs first")
    wins, losses = int((diff > tie_threshold).sum()), int((diff < -tie_threshold).sum())
    return WinTieLoss(wins, diff.size - wins - losses, losses)


def win_rates(a_scores: Sequence[float], b_scores: Sequence[float],
              tie_threshold: float = 0.0) -> dict[str, float]:
    """Fractions of pairs where A wins (a - b > t), ties (|a - b| <= t) and loses (a - b < -t).

    Args:
        a_scores, b_scores: (N,) scores of the two sides; NaN is an error.
        tie_threshold: t >= 0.

    Returns:
        {"win": ..., "tie": ..., "loss": ...}, summing to 1 (NaN each for N = 0).
    """
    counts = win_tie_loss(a_scores, b_scores, tie_threshold).as_dict()
    return {k: counts[k] for k in ("win", "tie", "loss")}
