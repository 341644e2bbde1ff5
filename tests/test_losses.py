"""Golden tests for videoalign.losses (docs/numerics.md, Reward losses). Each docstring writes out the arithmetic.

Constants: ln 2 = 0.693147, ln 5 = 1.609438, ln 6 = 1.791759, ln 24 = 3.178054, ln 1.5 = 0.405465, e = 2.718282.
"""

from __future__ import annotations

import math

import pytest
import torch

from videoalign.losses import (
    bt_loss,
    btt_loss,
    chosen_rejected,
    dpo_beta,
    flow_dpo_loss,
    flow_rwr_loss,
    reduce_loss,
    reg_loss,
    rwr_weights,
)

LN2, LN6, LN1_5 = 0.693147180560, 1.791759469228, 0.405465108108


def _t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def _labels(rows):
    return torch.tensor(rows, dtype=torch.long)


def test_chosen_rejected_convention():
    """7.1: label 1 -> chosen = A, rejected = B; labels -1, 0, 22 -> chosen = B, rejected = A.

    r_a = [1, 2, 3, 4], r_b = [10, 20, 30, 40], labels [1, -1, 0, 22]
    -> chosen = [1, 20, 30, 40], rejected = [10, 2, 3, 4].
    """
    r_a, r_b = _t([[1.0, 2.0, 3.0, 4.0]]), _t([[10.0, 20.0, 30.0, 40.0]])
    chosen, rejected = chosen_rejected(r_a, r_b, _labels([[1, -1, 0, 22]]))
    assert chosen.tolist() == [[1.0, 20.0, 30.0, 40.0]]
    assert rejected.tolist() == [[10.0, 2.0, 3.0, 4.0]]


def test_golden_values_at_zero_margin():
    """d = 0 (r_a = r_b), theta = 5:
    BT       = -log sigma(0) = log 2 = 0.693147
    BTT win  = -log sigma(-ln 5) = log(1 + e^{ln 5}) = log 6 = 1.791759
    BTT tie  = 2 log 6 - log(5^2 - 1) = log(36 / 24) = log 1.5 = 0.405465
    Labels [1, -1, 0, 22] cover every value: BT masks the tie and the invalid entry, BTT only the invalid one.
    """
    r = _t([[0.3, -1.2, 2.0, 0.7]])
    labels = _labels([[1, -1, 0, 22]])
    bt, bt_mask = bt_loss(r, r.clone(), labels)
    btt, btt_mask = btt_loss(r, r.clone(), labels)
    assert bt_mask.tolist() == [[True, True, False, False]]
    assert btt_mask.tolist() == [[True, True, True, False]]
    torch.testing.assert_close(bt, _t([[LN2, LN2, 0.0, 0.0]]), rtol=0, atol=1e-9)
    torch.testing.assert_close(btt, _t([[LN6, LN6, LN1_5, 0.0]]), rtol=0, atol=1e-9)
    assert math.isclose(math.log(6) * 2 - math.log(24), math.log(1.5), abs_tol=1e-12)


def test_golden_values_at_margin_one():
    """d = chosen - rejected = 1, theta = 5 (ln 5 = 1.6094379, 5/e = 1.8393972, 5e = 13.5914091):
    BT      = -log sigma(1) = log(1 + e^{-1}) = log 1.3678794 = 0.3132617
    BTT win = -log sigma(1 - ln 5) = log(1 + e^{ln 5 - 1}) = log(1 + 5/e) = log 2.8393972 = 1.0435918
    BTT tie = log(1 + 5/e) + log(1 + 5e) - ln 24 = 1.0435918 + log 14.5914091 - 3.1780538
            = 1.0435918 + 2.6804329 - 3.1780538 = 0.5459709
    Entries: (A=1, B=0, label 1): d = 1 - 0; (A=0, B=1, label -1): d = 1 - 0; tie with A - B = 1.
    """
    r_a = _t([[1.0, 0.0, 1.0]])
    r_b = _t([[0.0, 1.0, 0.0]])
    labels = _labels([[1, -1, 0]])
    bt, _ = bt_loss(r_a, r_b, labels)
    btt, _ = btt_loss(r_a, r_b, labels)
    torch.testing.assert_close(bt[0, :2], _t([0.3132617, 0.3132617]), rtol=0, atol=1e-7)
    torch.testing.assert_close(btt[0], _t([1.0435918, 1.0435918, 0.5459709]), rtol=0, atol=1e-7)
    assert math.isclose(math.log(1 + 5 / math.e), 1.0435918, abs_tol=1e-7)


def test_theta_other_than_five():
    """theta = 2, d = 0: win = log(1 + 2) = log 3 = 1.098612; tie = 2 log 3 - log 3 = log 3 = 1.098612."""
    r = _t([[0.0, 0.0]])
    btt, _ = btt_loss(r, r, _labels([[1, 0]]), theta=2.0)
    torch.testing.assert_close(btt, _t([[math.log(3), math.log(3)]]), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="theta"):
        btt_loss(r, r, _labels([[1, 0]]), theta=1.0)


def test_tie_loss_symmetric_and_minimal_at_zero():
    """tie(d) = log(1 + 5 e^{-d}) + log(1 + 5 e^{d}) - ln 24 is even in d, so tie(d) = tie(-d), and its derivative
    5e^d/(1+5e^d) - 5e^{-d}/(1+5e^{-d}) is 0 only at d = 0, where tie = ln 1.5 is the minimum."""
    d = torch.linspace(-6.0, 6.0, 121, dtype=torch.float64)[None, :]  # (1, 121), includes 0 at index 60
    zeros = torch.zeros_like(d)
    ties = _labels([[0] * d.shape[1]])
    plus, _ = btt_loss(zeros, d, ties)  # tie: chosen = B, so this is d
    minus, _ = btt_loss(d, zeros, ties)  # and this is -d
    torch.testing.assert_close(plus, minus, rtol=0, atol=1e-12)
    assert int(plus.argmin()) == 60
    assert math.isclose(float(plus.min()), LN1_5, abs_tol=1e-12)
    assert bool((plus[0, :60] > LN1_5).all() and (plus[0, 61:] > LN1_5).all())


@pytest.mark.parametrize("loss_fn", [bt_loss, btt_loss])
def test_swapping_sides_with_the_label_changes_nothing(loss_fn):
    """Swap r_a <-> r_b and relabel 1 <-> -1 (0 and 22 stay): a win keeps d = winner - loser; a tie's d changes sign
    and the tie loss is even; masks are unchanged. Random (B=4, D=5), every label value present."""
    g = torch.Generator().manual_seed(0)
    r_a = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    r_b = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    labels = _labels([[1, -1, 0, 22, 1], [-1, -1, 0, 0, 22], [1, 1, 1, 0, -1], [22, 22, 0, -1, 1]])
    swapped = torch.where(labels == 1, -1, torch.where(labels == -1, 1, labels))
    loss, mask = loss_fn(r_a, r_b, labels)
    loss_s, mask_s = loss_fn(r_b, r_a, swapped)
    torch.testing.assert_close(loss, loss_s, rtol=0, atol=1e-12)
    assert torch.equal(mask, mask_s)


def test_btt_probabilities_sum_to_one():
    """P(A>B) + P(B>A) + P(tie) = s1 + s2 + (theta^2 - 1) s1 s2 = 1 with s1 = sigma(d - ln theta),
    s2 = sigma(-d - ln theta). E.g. d = 0, theta = 5: 1/6 + 1/6 + 24/36 = 1. Checked both on the formula and as
    exp(-win(d)) + exp(-win(-d)) + exp(-tie(d)) from btt_loss itself."""
    d = torch.tensor([-30.0, -5.0, -1.0, -0.25, 0.0, 0.5, 1.0, 3.0, 12.0], dtype=torch.float64)
    for theta in (1.5, 2.0, 5.0, 20.0):
        lt = math.log(theta)
        s1, s2 = torch.sigmoid(d - lt), torch.sigmoid(-d - lt)
        torch.testing.assert_close(s1 + s2 + (theta ** 2 - 1) * s1 * s2, torch.ones_like(d), rtol=0, atol=1e-12)
        r_a, r_b = d[None, :], torch.zeros_like(d)[None, :]
        a_wins, _ = btt_loss(r_a, r_b, torch.ones_like(r_a, dtype=torch.long), theta)
        b_wins, _ = btt_loss(r_a, r_b, -torch.ones_like(r_a, dtype=torch.long), theta)
        tie, _ = btt_loss(r_a, r_b, torch.zeros_like(r_a, dtype=torch.long), theta)
        total = a_wins.neg().exp() + b_wins.neg().exp() + tie.neg().exp()
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)
    s = 1 / 6
    assert math.isclose(s + s + 24 * s * s, 1.0)


def test_compat_and_masked_mean_reductions():
    """B = 1, D = 3, d = 0, labels [1, 0, 22]: l1 = ln 6 (win), l2 = ln 1.5 (tie), the third is masked.
    compat      = (l1 + l2 + 0) / 3 = ln 9 / 3 = 2.1972246 / 3 = 0.7324082
    masked_mean = (l1 + l2) / 2     = ln 9 / 2 = ln 3 = 1.0986123
    """
    r = _t([[0.5, 0.5, 0.5]])
    loss, mask = btt_loss(r, r, _labels([[1, 0, 22]]))
    assert float(loss[0, 2]) == 0.0
    assert math.isclose(float(reduce_loss(loss, mask)), 0.7324082, abs_tol=1e-7)
    assert math.isclose(float(reduce_loss(loss, mask, "compat")), (LN6 + LN1_5) / 3, abs_tol=1e-12)
    assert math.isclose(float(reduce_loss(loss, mask, "masked_mean")), math.log(3), abs_tol=1e-12)
    with pytest.raises(ValueError, match="mode"):
        reduce_loss(loss, mask, "mean")


def test_masked_entry_has_no_gradient_and_empty_mask_reduces_to_zero():
    """A masked entry contributes 0 to the value and 0 to the gradient. With nothing valid, masked_mean = 0 / 1 = 0
    (no NaN) and compat = 0 / N = 0; gradients are zero."""
    r_a = _t([[0.2, -0.4, 1.0]]).requires_grad_()
    r_b = _t([[0.1, 0.3, -2.0]]).requires_grad_()
    loss, mask = btt_loss(r_a, r_b, _labels([[1, 0, 22]]))
    reduce_loss(loss, mask).backward()
    assert r_a.grad[0, 2] == 0 and r_b.grad[0, 2] == 0
    assert (r_a.grad[0, :2] != 0).all()
    for mode in ("compat", "masked_mean"):
        x = _t([[0.2, 0.3]]).requires_grad_()
        loss, mask = bt_loss(x, torch.zeros_like(x), _labels([[0, 22]]))
        total = reduce_loss(loss, mask, mode)
        total.backward()
        assert float(total.detach()) == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_for_large_margins(dtype):
    """d = +-50 and +-1000: log sigma(d) via logsigmoid stays finite (about -|d| for d << 0), and its derivative
    sigma(-d) is in [0, 1]; the tie loss grows like |d| with derivative -> +-1. d/dd BT at d = -50 is
    -sigma(50) = -1 (to float precision)."""
    values = [50.0, -50.0, 1000.0, -1000.0]
    for loss_fn in (bt_loss, btt_loss):
        for label in (1, -1, 0):
            r_a = torch.tensor([values], dtype=dtype, requires_grad=True)
            r_b = torch.zeros(1, 4, dtype=dtype, requires_grad=True)
            loss, mask = loss_fn(r_a, r_b, torch.full((1, 4), label, dtype=torch.long))
            reduce_loss(loss, mask).backward()
            assert torch.isfinite(loss).all() and torch.isfinite(r_a.grad).all() and torch.isfinite(r_b.grad).all()
    r_a = torch.tensor([[-50.0]], dtype=torch.float64, requires_grad=True)
    loss, _ = bt_loss(r_a, torch.zeros_like(r_a), _labels([[1]]))
    loss.sum().backward()
    assert math.isclose(float(loss.detach()), 50.0, rel_tol=1e-12)
    assert math.isclose(float(r_a.grad), -1.0, abs_tol=1e-12)


@pytest.mark.parametrize("d_dims", [1, 3, 7])
def test_any_number_of_dimensions(d_dims):
    """Shapes (B, D) in, (B, D) out for D = 1, 3, 7; at d = 0 every valid BTT win is ln 6."""
    r = torch.zeros(2, d_dims)
    loss, mask = btt_loss(r, r, torch.ones(2, d_dims, dtype=torch.long))
    assert loss.shape == mask.shape == (2, d_dims) and mask.dtype == torch.bool
    torch.testing.assert_close(loss, torch.full((2, d_dims), LN6, dtype=torch.float32))


def test_rejects_bad_shapes_and_labels():
    """Unknown label values (e.g. 2) and mismatched shapes are errors, not silent wins."""
    r = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="labels must be"):
        btt_loss(r, r, _labels([[1, 2, 0]]))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        bt_loss(r, torch.zeros(1, 2), _labels([[1, 1, 1]]))


def test_regression_loss():
    """7.4: stack [r_a, r_b] -> (B, 2, D); target MOS - 3; mask MOS != 0 tested before subtracting 3.
    r_a = [0.5, 1.0], r_b = [-1.0, 2.0], MOS_A = [4, 0], MOS_B = [3, 5]
    targets [[1, -3], [0, 2]], mask [[1, 0], [1, 1]]   (MOS 3 -> target 0 is valid; MOS 0 is absent)
    loss    [[(0.5-1)^2, 0], [(-1-0)^2, (2-2)^2]] = [[0.25, 0], [1, 0]]
    compat  = (0.25 + 0 + 1 + 0) / 4 = 0.3125;  masked_mean = 1.25 / 3 = 0.416667
    """
    loss, mask = reg_loss(_t([[0.5, 1.0]]), _t([[-1.0, 2.0]]), _t([[4.0, 0.0]]), _t([[3.0, 5.0]]))
    assert loss.shape == mask.shape == (1, 2, 2)
    assert mask.tolist() == [[[True, False], [True, True]]]
    torch.testing.assert_close(loss, _t([[[0.25, 0.0], [1.0, 0.0]]]), rtol=0, atol=1e-12)
    assert math.isclose(float(reduce_loss(loss, mask)), 0.3125, abs_tol=1e-12)
    assert math.isclose(float(reduce_loss(loss, mask, "masked_mean")), 1.25 / 3, abs_tol=1e-12)


# --- Flow-DPO and Flow-RWR (docs/numerics.md, Flow-DPO and Flow-RWR) ---------------------------------------------------------
# ln(1 + e^-1) = 0.313262, ln(1 + e) = 1.313262, ln 3 = 1.098612.

LN1P_EM1, LN1P_E, LN3 = 0.313261687518, 1.313261687518, 1.098612288668


def _dpo(pc, pr, rc, rr, beta):
    return flow_dpo_loss(_t(pc), _t(pr), _t(rc), _t(rr), beta)


def test_flow_dpo_loss_is_ln2_when_policy_equals_reference():
    """LoRA init (B = 0): policy errors == reference errors -> w_diff = l_diff = 0 -> inside = 0 ->
    loss = -log sigmoid(0) = ln 2 = 0.693147 for any beta and any error level; implicit_acc = 1[0 > 0] = 0."""
    err_c, err_r = [0.3, 1.7, 5.0], [0.9, 0.2, 5.0]
    loss, stats = _dpo(err_c, err_r, err_c, err_r, 500.0)
    assert loss.shape == (3,)
    torch.testing.assert_close(loss, _t([LN2] * 3), rtol=0, atol=1e-12)
    assert stats["inside"].tolist() == [0.0, 0.0, 0.0]
    assert stats["implicit_acc"].tolist() == [0.0, 0.0, 0.0]
    assert stats["w_diff"].tolist() == stats["l_diff"].tolist() == [0.0, 0.0, 0.0]


def test_flow_dpo_loss_golden_beta_2():
    """beta = 2. Row 0: policy lowers the chosen error and raises the rejected one:
        w_diff = 0.5 - 1.0 = -0.5,  l_diff = 1.5 - 1.0 = 0.5,  Delta = -1,  inside = -(2/2)(-1) = 1
        loss = -log sigmoid(1) = ln(1 + e^-1) = 0.313262,  implicit_acc = 1
    Row 1: the sides swapped -> inside = -1, loss = ln(1 + e) = 1.313262, implicit_acc = 0.
    (The two differ by exactly 1 = inside: -log sigmoid(-x) + log sigmoid(x) = x.)"""
    loss, stats = _dpo([0.5, 1.5], [1.5, 0.5], [1.0, 1.0], [1.0, 1.0], 2.0)
    torch.testing.assert_close(loss, _t([LN1P_EM1, LN1P_E]), rtol=0, atol=1e-9)
    assert stats["w_diff"].tolist() == [-0.5, 0.5]
    assert stats["l_diff"].tolist() == [0.5, -0.5]
    assert stats["inside"].tolist() == [1.0, -1.0]
    assert stats["reward_margin"].tolist() == [1.0, -1.0]
    assert stats["implicit_acc"].tolist() == [1.0, 0.0]
    assert stats["policy_chosen_err"].tolist() == [0.5, 1.5] and stats["ref_rejected_err"].tolist() == [1.0, 1.0]


def test_flow_dpo_loss_per_sample_beta_and_reference_offsets():
    """beta (B,) = (2, 4). Row 0: w_diff = 2.0 - 2.5 = -0.5, l_diff = 3.0 - 2.5 = 0.5 -> inside = -1 * (-1) = 1.
    Row 1: w_diff = 0.75 - 0.5 = 0.25, l_diff = 0.5 - 0.75 = -0.25, Delta = 0.5 -> inside = -2 * 0.5 = -1.
    Only the differences to the reference matter, not the error level: losses (0.313262, 1.313262)."""
    loss, stats = _dpo([2.0, 0.75], [3.0, 0.5], [2.5, 0.5], [2.5, 0.75], _t([2.0, 4.0]))
    assert stats["inside"].tolist() == [1.0, -1.0]
    torch.testing.assert_close(loss, _t([LN1P_EM1, LN1P_E]), rtol=0, atol=1e-9)


def test_flow_dpo_loss_gradient_and_detached_stats():
    """d loss / d policy_chosen_err = -sigmoid(-inside) * d inside / d pce = sigmoid(-inside) * beta / 2.
    At inside = 0, beta = 2: +0.5 for the chosen error and -0.5 for the rejected one (raise the rejected error,
    lower the chosen). Stats carry no graph."""
    pc = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    pr = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    loss, stats = flow_dpo_loss(pc, pr, _t([1.0]), _t([1.0]), 2.0)
    loss.sum().backward()
    assert pc.grad.tolist() == [0.5] and pr.grad.tolist() == [-0.5]
    assert all(not v.requires_grad for v in stats.values())
    assert set(stats) == {"inside", "implicit_acc", "reward_margin", "w_diff", "l_diff", "policy_chosen_err",
                          "policy_rejected_err", "ref_chosen_err", "ref_rejected_err"}


def test_dpo_beta_schedules():
    """constant: beta everywhere (float32). timestep: beta (1 - t)^2 with beta = 100:
    t = 0 -> 100, t = 0.5 -> 25, t = 0.9 -> 100 * 0.01 = 1, t = 1 -> 0 (noisy steps unregularised)."""
    t = torch.tensor([0.0, 0.5, 0.9, 1.0])
    const = dpo_beta(100.0, t)
    assert const.dtype == torch.float32 and const.tolist() == [100.0] * 4
    torch.testing.assert_close(dpo_beta(100.0, t, "timestep"), torch.tensor([100.0, 25.0, 1.0, 0.0]),
                               rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="constant or timestep"):
        dpo_beta(1.0, t, "linear")


def test_rwr_weights_exp():
    """r = (0, ln 3), T = 1: exp -> (1, 3); normalised by the mean 2 -> (0.5, 1.5), mean weight 1.
    T = 2 with r = (0, 2 ln 3): exp(r / 2) = (1, 3) again."""
    r = _t([0.0, LN3])
    torch.testing.assert_close(rwr_weights(r, "exp", normalize=False), torch.tensor([1.0, 3.0]))
    normed = rwr_weights(r, "exp")
    assert normed.dtype == torch.float32
    torch.testing.assert_close(normed, torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(rwr_weights(2 * r, "exp", temperature=2.0, normalize=False),
                               torch.tensor([1.0, 3.0]))


def test_rwr_weights_exp_normalised_does_not_overflow():
    """r = (1000, 1000 + ln 3): exp(1000) overflows float32, but exp(r - max r) / mean = (1/3, 1) / (2/3) =
    (0.5, 1.5), the same as for r = (0, ln 3): normalised exp weights ignore a common offset."""
    got = rwr_weights(_t([1000.0, 1000.0 + LN3]), "exp")
    assert bool(torch.isfinite(got).all())
    torch.testing.assert_close(got, torch.tensor([0.5, 1.5]))


def test_rwr_weights_raw_and_uniform():
    """raw: w = r = (1, -3); normalised by mean |w| = (1 + 3) / 2 = 2 -> (0.5, -1.5). All-zero raw weights cannot
    be normalised (error). uniform: w = 1 whatever the rewards, normalised or not."""
    r = _t([1.0, -3.0])
    assert rwr_weights(r, "raw", normalize=False).tolist() == [1.0, -3.0]
    assert rwr_weights(r, "raw").tolist() == [0.5, -1.5]
    with pytest.raises(ValueError, match="all reward weights"):
        rwr_weights(_t([0.0, 0.0]), "raw")
    assert rwr_weights(_t([5.0, -2.0, 0.1]), "uniform").tolist() == [1.0, 1.0, 1.0]
    assert rwr_weights(_t([5.0, -2.0]), "uniform", normalize=False).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="exp, raw or uniform"):
        rwr_weights(r, "softmax")
    with pytest.raises(ValueError, match="temperature"):
        rwr_weights(r, "exp", temperature=0.0)


@pytest.mark.parametrize("weighting", ["exp", "raw"])
def test_rwr_weights_normalise_over_the_global_batch(weighting):
    """Two processes holding r = (0,) and (ln 3,) with batch_rewards = the gathered (0, ln 3) get exactly the
    weights one process computes for (0, ln 3): exp -> 0.5 and 1.5 (exp(0 - ln 3) / mean(1/3, 1) = (1/3)/(2/3));
    raw -> 0 and ln 3 / (ln 3 / 2) = 2."""
    both = _t([0.0, LN3])
    whole = rwr_weights(both, weighting)
    parts = torch.cat([rwr_weights(both[:1], weighting, batch_rewards=both),
                       rwr_weights(both[1:], weighting, batch_rewards=both)])
    torch.testing.assert_close(parts, whole)
    want = [0.5, 1.5] if weighting == "exp" else [0.0, 2.0]
    torch.testing.assert_close(whole, torch.tensor(want))
    # normalised over its own sample only, the second process would get weight 1 instead of 1.5 (exp) or 2 (raw)
    assert rwr_weights(both[1:], weighting).tolist() == [1.0]


def test_flow_rwr_loss_golden():
    """err (2, 4), w (0.5, 1.5) -> per-sample loss (1, 6), mean 3.5; d loss_i / d err_i = w_i; the weights'
    dtype follows err (float64 weights, float32 loss)."""
    err = torch.tensor([2.0, 4.0], requires_grad=True)
    loss = flow_rwr_loss(err, _t([0.5, 1.5]))
    assert loss.dtype == torch.float32 and loss.tolist() == [1.0, 6.0]
    assert loss.mean().item() == 3.5
    loss.sum().backward()
    assert err.grad.tolist() == [0.5, 1.5]
