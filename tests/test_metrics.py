"""Hand-computed tests for videoalign.metrics (docs/numerics.md, Accuracy with and without ties). Each docstring writes out the counts.

Classes at threshold eps (model tie iff |m| <= eps), in order: T_hm (h = 0, tied), T_h (h = 0), T_m (tied),
C (h * m > 0), D (the rest). acc(eps) = (C + T_hm) / (C + D + T_h + T_m + T_hm) = (C + T_hm) / N.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from videoalign.metrics import (
    TieResult,
    accuracy_with_ties,
    accuracy_with_ties_compat,
    accuracy_without_ties,
    accuracy_without_ties_compat,
    tie_accuracy_curve,
    win_rates,
)

NAN = math.nan


# --- oracles written independently of the implementation ------------------------------------------------------

def _classify(h: float, m: float, eps: float) -> str:
    tied = abs(m) <= eps
    if h == 0:
        return "Thm" if tied else "Th"
    if tied:
        return "Tm"
    return "C" if h * m > 0 else "D"


def _acc_at(human, margin, eps) -> float:
    counts = {"C": 0, "D": 0, "Th": 0, "Tm": 0, "Thm": 0}
    for h, m in zip(human, margin):
        counts[_classify(h, m, eps)] += 1
    return (counts["C"] + counts["Thm"]) / sum(counts.values())


def _brute_force(human, margin) -> tuple[float, float]:
    """O(N^2): evaluate every eps in {-inf} U {distinct |m|} from scratch; first maximum = smallest eps."""
    best, best_eps = -1.0, None
    for eps in [-math.inf, *sorted({abs(m) for m in margin})]:
        acc = _acc_at(human, margin, eps)
        if acc > best:
            best, best_eps = acc, eps
    return best, best_eps


def _compat_oracle(human, margin) -> float:
    """9.5 restated: stable order by |m|; score every prefix k = 1..N tied (never k = 0); take the max."""
    order = sorted(range(len(margin)), key=lambda i: abs(margin[i]))
    best = -math.inf
    for k in range(1, len(order) + 1):
        tied = set(order[:k])
        counts = {"C": 0, "D": 0, "Th": 0, "Tm": 0, "Thm": 0}
        for i, (h, m) in enumerate(zip(human, margin)):
            counts[_classify(h, m, math.inf if i in tied else -math.inf)] += 1
        best = max(best, (counts["C"] + counts["Thm"]) / len(order))
    return best


def _random_case(seed: int, n: int, nan_labels: bool = True):
    """Labels 1/-1/0 (and some NaN), margins on a coarse grid so |m| repeats a lot (also +-m and 0)."""
    rng = np.random.default_rng(seed)
    probs = [0.35, 0.35, 0.2, 0.1] if nan_labels else [0.4, 0.4, 0.2, 0.0]
    human = rng.choice([1.0, -1.0, 0.0, NAN], size=n, p=probs).tolist()
    margin = (rng.integers(-6, 7, size=n) * 0.25).tolist()
    return human, margin


# --- (a) without ties -------------------------------------------------------------------------------------------

def test_accuracy_without_ties_counts_zero_margin_and_nan_label_wrong():
    """4 pairs, no ties:   h = [1, -1, 1, -1], m = [0.5, -2.0, 0.0, 1.0]
    h*m = [0.5, 2.0, 0.0, -1.0] -> C, C, D (m = 0 exactly is wrong), D (wrong sign) -> 2 / (2 + 2) = 0.5.

    With a NaN label and a human tie: h = [1, -1, 1, NaN, 0], m = [0.5, -2.0, 0.0, 3.0, 1.0]
    the h = 0 pair is dropped; the NaN pair stays and is wrong -> C = 2, D = 2 (m = 0, NaN) -> 0.5.
    Dropping the NaN pair instead would give 2/3, and counting the tie 2/5: neither is the metric.
    """
    assert accuracy_without_ties([1, -1, 1, -1], [0.5, -2.0, 0.0, 1.0]) == 0.5
    human, margin = [1, -1, 1, NAN, 0], [0.5, -2.0, 0.0, 3.0, 1.0]
    assert accuracy_without_ties(human, margin) == 0.5
    assert accuracy_without_ties_compat(human, margin) == 0.5
    assert accuracy_without_ties([1, -1, 1, None, 0], margin) == 0.5  # None is read as NaN
    assert accuracy_without_ties([1, -1], [3.0, -0.1]) == 1.0
    assert math.isnan(accuracy_without_ties([0, 0], [1.0, 2.0]))  # nothing to score
    assert math.isnan(accuracy_without_ties_compat([0, 0], [1.0, 2.0]))


@pytest.mark.parametrize("seed", range(5))
def test_without_ties_compat_equals_exact(seed):
    """9.5: compat's C / (C + D + T_m) at eps = -1 (T_m = 0) is 9.3's C / (C + D), NaN labels in D."""
    human, margin = _random_case(seed, 150)
    assert accuracy_without_ties_compat(human, margin) == accuracy_without_ties(human, margin)


def test_rejects_unknown_labels_and_length_mismatch():
    """Exact metrics take h in {1, -1, 0, NaN} only (a raw 'A' or 2 is a caller bug) and equal lengths."""
    with pytest.raises(ValueError, match="1, -1, 0 or NaN"):
        accuracy_with_ties([1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="same length"):
        accuracy_without_ties([1, -1], [0.1])
    with pytest.raises(ValueError, match="same length"):
        accuracy_with_ties_compat([1, -1], [0.1])


# --- (b) with ties, hand-computed --------------------------------------------------------------------------------

def test_accuracy_with_ties_best_threshold_strictly_inside():
    """h = [1, -1, 0, 0, 1, 1], m = [2.0, -1.5, 0.1, -0.3, 0.8, -0.2]; N = 6, human tie rate 2/6.
    Sorted by |m|: 0.1 (h=0), 0.2 (h=1, m<0: wrong), 0.3 (h=0), 0.8 (C), 1.5 (C), 2.0 (C).

        eps     C  D  T_h  T_m  T_hm   acc
        -inf    3  1   2    0    0     3/6
        0.1     3  1   1    0    1     4/6
        0.2     3  0   1    1    1     4/6
        0.3     3  0   0    1    2     5/6   <- best: 0 < eps* = 0.3 < max|m| = 2.0
        0.8     2  0   0    2    2     4/6
        1.5     1  0   0    3    2     3/6
        2.0     0  0   0    4    2     2/6

    No |m| repeats and the no-tie state is not the best, so compat gives the same 5/6 at 0.3.
    """
    human, margin = [1, -1, 0, 0, 1, 1], [2.0, -1.5, 0.1, -0.3, 0.8, -0.2]
    expected = {-math.inf: 3, 0.1: 4, 0.2: 4, 0.3: 5, 0.8: 4, 1.5: 3, 2.0: 2}
    for eps, numerator in expected.items():
        assert _acc_at(human, margin, eps) == numerator / 6
    result = accuracy_with_ties(human, margin)
    assert isinstance(result, TieResult)
    assert result == TieResult(5 / 6, 0.3, 2 / 6, 6)
    assert accuracy_with_ties_compat(human, margin) == TieResult(5 / 6, 0.3, 2 / 6, 6)


def test_tie_accuracy_curve():
    """The table of the previous test as a step curve over eps >= 0; min |m| = 0.1 > 0, so the no-tie value 3/6
    is drawn from eps = 0. With an exact m = 0 (h = [1, 0], m = [0, 1]): -inf: D=1, T_h=1 -> 0; eps=0: T_m=1,
    T_h=1 -> 0; eps=1: T_m=1, T_hm=1 -> 1/2; the curve starts at the eps = 0 state, so ([0, 1], [0, 1/2])."""
    thresholds, accuracy = tie_accuracy_curve([1, -1, 0, 0, 1, 1], [2.0, -1.5, 0.1, -0.3, 0.8, -0.2])
    assert thresholds == [0.0, 0.1, 0.2, 0.3, 0.8, 1.5, 2.0]
    assert accuracy == pytest.approx([3 / 6, 4 / 6, 4 / 6, 5 / 6, 4 / 6, 3 / 6, 2 / 6])
    assert tie_accuracy_curve([1, 0], [0.0, 1.0]) == ([0.0, 1.0], [0.0, 0.5])
    assert tie_accuracy_curve([], []) == ([], [])


def test_nan_label_is_a_pair_not_a_tie():
    """h = [0, NaN, 1], m = [0.1, 0.2, 0.5]; human tie rate = 1/3 (the NaN pair counts in N, not as a tie).
    -inf: C=1 (0.5), D=1 (NaN), T_h=1 -> 1/3;  0.1: T_hm=1, D=1, C=1 -> 2/3;  0.2: T_hm=1, T_m=1 (NaN), C=1 -> 2/3;
    0.5: T_hm=1, T_m=2 -> 1/3. Best 2/3 at eps = 0.1 (smallest on a tie)."""
    assert accuracy_with_ties([0, NAN, 1], [0.1, 0.2, 0.5]) == TieResult(2 / 3, 0.1, 1 / 3, 3)


# --- (c) never below the human tie rate --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_result_at_least_human_tie_rate(seed):
    """eps = max|m| makes every pair a model tie: acc = T_hm / N = human tie rate, so the max is >= it. An
    adversarial scorer (every non-tie reversed, every human tie far from 0) reaches exactly the tie rate:
    -inf: C = 0 -> 0;  any eps below the human ties' |m| >= 10: T_hm = 0 -> 0;  eps = max: T_hm = #ties."""
    human, margin = _random_case(seed, 120)
    result = accuracy_with_ties(human, margin)
    assert result.accuracy >= result.human_tie_rate
    assert result.human_tie_rate == sum(h == 0 for h in human) / len(human)

    rng = np.random.default_rng(seed)
    human = rng.choice([1.0, -1.0, 0.0], size=50).tolist()
    margin = [-h * (1 + rng.random()) if h else 10 + rng.random() for h in human]
    adversarial = accuracy_with_ties(human, margin)
    assert adversarial.accuracy == adversarial.human_tie_rate == human.count(0.0) / 50
    assert adversarial.threshold == max(abs(m) for m in margin)


# --- (d) equal |m|: compat scores partial groups -----------------------------------------------------------------

def test_compat_scores_partial_states_within_equal_margins():
    """h = [0, 1, 1], m = [1, 1, 2]: the first two pairs share |m| = 1.
    Exact (whole groups):  -inf: C=2, T_h=1 -> 2/3;  eps=1: T_hm=1, T_m=1, C=1 -> 2/3;  eps=2: T_hm=1, T_m=2 -> 1/3
                           -> 2/3 at eps* = -inf (the first maximum).
    Compat (one pair at a time, stable order): tie pair 0 only: T_hm=1, C=2 -> 3/3 = 1.0 (no threshold ties the
    human tie but not the other |m| = 1 pair); then 2/3; then 1/3 -> 1.0 at "eps" = 1.
    Reorder to h = [1, 0, 1]: compat first ties the correct pair: C=1, T_m=1, T_h=1 -> 1/3; then 2/3; then 1/3
    -> 2/3. Compat depends on the input order; exact does not.
    """
    assert accuracy_with_ties([0, 1, 1], [1.0, 1.0, 2.0]) == TieResult(2 / 3, -math.inf, 1 / 3, 3)
    assert accuracy_with_ties_compat([0, 1, 1], [1.0, 1.0, 2.0]) == TieResult(1.0, 1.0, 1 / 3, 3)
    assert accuracy_with_ties([1, 0, 1], [1.0, 1.0, 2.0]).accuracy == 2 / 3
    assert accuracy_with_ties_compat([1, 0, 1], [1.0, 1.0, 2.0]) == TieResult(2 / 3, 1.0, 1 / 3, 3)


# --- (e) compat never scores the no-tie state --------------------------------------------------------------------

def test_compat_never_scores_no_tie_state():
    """All correct, no human ties: h = [1, -1, 1], m = [1, -2, 3].
    Exact: -inf: C=3 -> 3/3 = 1.0 (best);  eps=1: C=2, T_m=1 -> 2/3;  eps=2: 1/3;  eps=3: 0.
    Compat starts scoring only after tying the smallest |m|: 2/3, 1/3, 0 -> 2/3 at eps = 1.
    So compat can be below exact (here by 1/3), and only when eps* = -inf is the unique best.
    """
    assert accuracy_with_ties([1, -1, 1], [1.0, -2.0, 3.0]) == TieResult(1.0, -math.inf, 0.0, 3)
    assert accuracy_with_ties_compat([1, -1, 1], [1.0, -2.0, 3.0]) == TieResult(2 / 3, 1.0, 0.0, 3)


@pytest.mark.parametrize("seed", range(8))
def test_compat_difference_is_exactly_the_two_effects(seed):
    """Compat = max over prefixes k = 1..N of the stable |m| order (restated oracle). Exact = max over k = 0 and
    whole-group ends. So: compat >= exact restricted to eps >= 0 (whole-group ends are prefixes), and compat <
    exact only when eps* = -inf. Also with no repeated |m| and a tie-free best, the two agree."""
    human, margin = _random_case(seed, 60)
    compat = accuracy_with_ties_compat(human, margin).accuracy
    exact = accuracy_with_ties(human, margin)
    assert compat == _compat_oracle(human, margin)
    best_with_ties = max(_acc_at(human, margin, abs(m)) for m in margin)
    assert compat >= best_with_ties
    if compat < exact.accuracy:
        assert exact.threshold == -math.inf
    rng = np.random.default_rng(seed)
    margin = rng.normal(size=60).tolist()  # continuous: no repeats
    exact = accuracy_with_ties(human, margin)
    if exact.threshold != -math.inf:
        assert accuracy_with_ties_compat(human, margin).accuracy == exact.accuracy


def test_compat_edge_cases():
    """Empty -> -inf (the reference's initial best). Any exception -> 0, e.g. an unmapped string label 'A' hits
    'A' * m > 0 (TypeError) in the reference's order of tests; a warning says so."""
    assert accuracy_with_ties_compat([], []).accuracy == -math.inf
    assert math.isnan(accuracy_with_ties([], []).accuracy)
    with pytest.warns(UserWarning, match="returning 0"):
        assert accuracy_with_ties_compat(["A", 1], [0.5, 1.0]).accuracy == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # numpy input, NaN label: -1: C=1, D=1, T_h=1; tie 0.2: T_hm=1, C=1, D=1 -> 2/3; then 1/3, 1/3
        result = accuracy_with_ties_compat(np.array([1.0, NAN, 0.0]), np.array([0.5, 1.0, 0.2]))
        assert result == TieResult(2 / 3, 0.2, 1 / 3, 3)


# --- (f) exact O(N log N) == brute force O(N^2) ------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 7, 50, 200])
@pytest.mark.parametrize("seed", range(4))
def test_exact_matches_brute_force(seed, n):
    """Margins on a 0.25 grid in [-1.5, 1.5] (13 values, so at N = 200 each |m| repeats ~30 times, +-m and 0
    included), 10 % NaN labels: accuracy and eps* (smallest on a tie) equal the brute-force scan."""
    human, margin = _random_case(seed, n)
    accuracy, threshold = _brute_force(human, margin)
    result = accuracy_with_ties(human, margin)
    assert result.accuracy == accuracy
    assert result.threshold == threshold
    assert result.pairs == n


# --- (g) random scorer --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("p_tie", "expected"), [(0.5, 0.5), (0.2, 0.4), (0.0, 0.5)])
def test_random_scorer(p_tie, expected):
    """Random m independent of h. If a fraction q of pairs is model-tied, acc = p_tie q + (1 - p_tie)(1 - q) / 2,
    linear in q, so the best is an end: max(p_tie, (1 - p_tie) / 2).  p_tie = 0.5: max(0.5, 0.25) = 0.5;
    p_tie = 0.2: max(0.2, 0.4) = 0.4;  p_tie = 0: 0.5. N = 20000: sd of a proportion ~ 0.0035; the max over
    thresholds adds a small upward bias, hence the tolerance 0.015."""
    rng = np.random.default_rng(123)
    n = 20_000
    human = rng.choice([1.0, -1.0, 0.0], size=n, p=[(1 - p_tie) / 2, (1 - p_tie) / 2, p_tie])
    margin = rng.normal(size=n)
    result = accuracy_with_ties(human, margin)
    assert abs(result.accuracy - expected) < 0.015
    assert abs(accuracy_with_ties_compat(human, margin).accuracy - expected) < 0.015
    assert abs(accuracy_without_ties(human, margin) - 0.5) < 0.015


# --- (h) win rates and label maps ---------------------------------------------------------------------------------

def test_win_rates():
    """a - b = [2, -1, 0, -0.05, 0.5]:
    t = 0:   win {2, 0.5} = 2/5, loss {-1, -0.05} = 2/5, tie {0} = 1/5
    t = 0.5: win {2} = 1/5 (0.5 is not > 0.5), loss {-1} = 1/5, tie {0, -0.05, 0.5} = 3/5
    """
    a, b = [3.0, 1.0, 2.0, 2.0, 1.5], [1.0, 2.0, 2.0, 2.05, 1.0]
    assert win_rates(a, b) == pytest.approx({"win": 0.4, "tie": 0.2, "loss": 0.4})
    assert win_rates(a, b, tie_threshold=0.5) == pytest.approx({"win": 0.2, "tie": 0.6, "loss": 0.2})
    with pytest.raises(ValueError, match="tie_threshold"):
        win_rates(a, b, tie_threshold=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        win_rates([NAN], [0.0])
    assert all(math.isnan(v) for v in win_rates([], []).values())


def test_win_tie_loss_golden():
    """a - b = [2, -1, 0, 1.5] (the docstring's example):
    t = 0:   wins {2, 1.5} = 2, ties {0} = 1, losses {-1} = 1 -> win_rate (2 + 1/2) / 4 = 0.625
    t = 1:   wins {2, 1.5} = 2, ties {-1, 0} = 2 (|-1| <= 1), losses 0 -> (2 + 2/2) / 4 = 0.75
    t = 2:   wins {} (2 is not > 2), ties all 4 -> 0.5
    """
    from videoalign.metrics import WinTieLoss, win_tie_loss

    a, b = [3.0, 1.0, 2.0, 2.5], [1.0, 2.0, 2.0, 1.0]
    result = win_tie_loss(a, b)
    assert result == WinTieLoss(wins=2, ties=1, losses=1) and result.n == 4
    assert result.win_rate == 0.625
    assert result.as_dict() == {"wins": 2, "ties": 1, "losses": 1, "n": 4, "win": 0.5, "tie": 0.25, "loss": 0.25,
                                "win_rate": 0.625}
    assert win_tie_loss(a, b, tie_threshold=1.0) == (2, 2, 0) and win_tie_loss(a, b, 1.0).win_rate == 0.75
    assert win_tie_loss(a, b, tie_threshold=2.0) == (0, 4, 0) and win_tie_loss(a, b, 2.0).win_rate == 0.5
    # the swap: B against A mirrors wins and losses, win rates sum to 1
    assert win_tie_loss(b, a) == (1, 1, 2) and win_tie_loss(b, a).win_rate == 1 - 0.625


def test_win_tie_loss_identical_and_edges():
    """A model against itself: every pair ties exactly -> win_rate exactly 0.5, whatever the scores."""
    from videoalign.metrics import win_tie_loss

    scores = np.random.default_rng(0).normal(size=101)
    same = win_tie_loss(scores, scores.copy())
    assert same == (0, 101, 0) and same.win_rate == 0.5
    empty = win_tie_loss([], [])
    assert empty.n == 0 and math.isnan(empty.win_rate) and all(math.isnan(empty.as_dict()[k])
                                                               for k in ("win", "tie", "loss"))
    with pytest.raises(ValueError, match="tie_threshold"):
        win_tie_loss([1.0], [0.0], tie_threshold=NAN)
    with pytest.raises(ValueError, match="same length"):
        win_tie_loss([1.0, 2.0], [0.0])
    with pytest.raises(ValueError, match="NaN"):
        win_tie_loss([1.0, NAN], [0.0, 0.0])
