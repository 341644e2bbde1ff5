"""Pairwise losses of the VideoReward reward model (docs/numerics.md, Reward losses). Pure torch functions.

Every loss takes the two sides' rewards r_a, r_b of shape (B, D) (D reward dimensions, 3 for VQ/MQ/TA, but any
D works) and returns the **per-element** loss and its mask, both (B, D). Masked entries hold a loss of exactly 0
(never NaN), so `loss * mask` and `loss` agree. The caller reduces with `reduce_loss`; the reference's reduction is
`compat`, the mean over all B*D entries, masked ones included (7.3).

Labels per entry (7.1): 1 = A better, -1 = B better, 0 = tie, 22 = invalid (videoalign.labels).
The chosen/rejected convention: chosen = r_a where label == 1, else r_b; rejected = the other side; d = chosen -
rejected. Ties and invalid entries get chosen = B, which is harmless because the tie loss is symmetric in d.

Equations (sigma = logistic function, theta > 1, ln = natural log):
- `bt_loss`   (Bradley-Terry):             l = -log sigma(d),                                 mask = label in {1, -1}
- `btt_loss`  (Rao-Kupper BT with ties, 7.2): win l = -log sigma(d - ln theta);
                                           tie l = -log sigma(d - ln theta) - log sigma(-d - ln theta)
                                                   - ln(theta^2 - 1),                        mask = label != 22
  These are -log of P(A > B) = sigma(r_A - r_B - ln theta), P(B > A) = sigma(r_B - r_A - ln theta) and
  P(tie) = (theta^2 - 1) sigma(d - ln theta) sigma(-d - ln theta), which sum to 1. (The paper's Eq. (1) is printed
  with a typo in some renderings; this is the symmetric form the reference code computes.)
- `reg_loss`  (regression, 7.4):           l = (r - (MOS - 3))^2 on the stacked (B, 2, D) sides, mask = MOS != 0
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from videoalign.labels import INVALID

_ALLOWED_LABELS = (1, -1, 0, INVALID)

Reduction = Literal["compat", "masked_mean"]


def _check(r_a: torch.Tensor, r_b: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if r_a.shape != r_b.shape or r_a.dim() != 2:
        raise ValueError(f"r_a and r_b must both be (B, D); got {tuple(r_a.shape)} and {tuple(r_b.shape)}")
    if labels is not None:
        if labels.shape != r_a.shape:
            raise ValueError(f"labels must be (B, D) = {tuple(r_a.shape)}; got {tuple(labels.shape)}")
        known = torch.zeros_like(labels, dtype=torch.bool)
        for value in _ALLOWED_LABELS:
            known |= labels == value
        if not bool(known.all()):
            bad = sorted(set(labels[~known].tolist()))
            raise ValueError(f"labels must be 1 (A), -1 (B), 0 (tie) or {INVALID} (invalid); got {bad}. "
                             "Build them with videoalign.labels.read_pairs.")


def chosen_rejected(r_a: torch.Tensor, r_b: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry chosen and rejected rewards (docs/numerics.md, Labels).

    chosen = r_a if label == 1 else r_b;  rejected = r_b if label == 1 else r_a.
    So label -1, 0 and 22 all give chosen = B, rejected = A.

    Args:
        r_a, r_b: (B, D) rewards of side A and side B.
        labels: (B, D) integer labels in {1, -1, 0, 22}.

    Returns:
        chosen, rejected: (B, D) each, differentiable with respect to r_a and r_b.
    """
    _check(r_a, r_b, labels)
    a_wins = labels == 1
    return torch.where(a_wins, r_a, r_b), torch.where(a_wins, r_b, r_a)


def bt_loss(r_a: torch.Tensor, r_b: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bradley-Terry loss per entry: l = -log sigma(d), d = chosen - rejected; mask = label in {1, -1}.

    Ties (0) and invalid entries (22) are masked (loss 0).

    Args:
        r_a, r_b: (B, D) float rewards.
        labels: (B, D) integer labels in {1, -1, 0, 22}.

    Returns:
        loss: (B, D) float, 0 where masked.
        mask: (B, D) bool, detached.
    """
    chosen, rejected = chosen_rejected(r_a, r_b, labels)
    mask = (labels == 1) | (labels == -1)
    loss = -F.logsigmoid(chosen - rejected)  # (B, D)
    return torch.where(mask, loss, torch.zeros_like(loss)), mask


def btt_loss(r_a: torch.Tensor, r_b: torch.Tensor, labels: torch.Tensor,
             theta: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rao-Kupper Bradley-Terry-with-ties loss per entry (docs/numerics.md, Reward losses); mask = label != 22.

    With d = chosen - rejected:
        win (label 1 or -1): l = -log sigma(d - ln theta)
        tie (label 0):       l = -log sigma(d - ln theta) - log sigma(-d - ln theta) - ln(theta^2 - 1)
    At d = 0, theta = 5: win = ln 6 = 1.791759, tie = 2 ln 6 - ln 24 = ln 1.5 = 0.405465.
    Computed with logsigmoid, so values and gradients stay finite for any finite d.

    Args:
        r_a, r_b: (B, D) float rewards.
        labels: (B, D) integer labels in {1, -1, 0, 22}.
        theta: tie parameter, > 1 (the released model uses 5).

    Returns:
        loss: (B, D) float, 0 where masked.
        mask: (B, D) bool, detached.
    """
    if not theta > 1.0:
        raise ValueError(f"theta must be > 1 (ln(theta^2 - 1) is undefined otherwise); got {theta}")
    chosen, rejected = chosen_rejected(r_a, r_b, labels)
    d = chosen - rejected  # (B, D)
    log_theta = math.log(theta)
    win = -F.logsigmoid(d - log_theta)
    tie = win - F.logsigmoid(-d - log_theta) - math.log(theta * theta - 1.0)
    mask = labels != INVALID
    loss = torch.where(labels == 0, tie, win)
    return torch.where(mask, loss, torch.zeros_like(loss)), mask


def reg_loss(r_a: torch.Tensor, r_b: torch.Tensor, mos_a: torch.Tensor,
             mos_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression loss per entry (docs/numerics.md, Reward losses): l = (r - (MOS - 3))^2 with mask MOS != 0.

    The sides are stacked as [A, B] on dim 1. The mask is tested on the raw MOS, before 3.0 is subtracted:
    MOS 0 means "absent" (masked), MOS 3 is a valid target of 0.

    Args:
        r_a, r_b: (B, D) float rewards.
        mos_a, mos_b: (B, D) float mean opinion scores (0 = absent).

    Returns:
        loss: (B, 2, D) float, 0 where masked.
        mask: (B, 2, D) bool, detached.
    """
    _check(r_a, r_b)
    if mos_a.shape != r_a.shape or mos_b.shape != r_a.shape:
        raise ValueError(f"mos_a and mos_b must be (B, D) = {tuple(r_a.shape)}; "
                         f"got {tuple(mos_a.shape)} and {tuple(mos_b.shape)}")
    rewards = torch.stack([r_a, r_b], dim=1)  # (B, 2, D)
    mos = torch.stack([mos_a, mos_b], dim=1).to(rewards.dtype)  # (B, 2, D)
    mask = mos != 0
    loss = (rewards - (mos - 3.0)) ** 2
    return torch.where(mask, loss, torch.zeros_like(loss)), mask


def reduce_loss(loss: torch.Tensor, mask: torch.Tensor, mode: Reduction = "compat") -> torch.Tensor:
    """Reduce a per-element loss to a scalar.

    compat      (reference, 7.3): mean(loss * mask) over ALL entries; masked entries count in the denominator.
    masked_mean:                  sum(loss * mask) / sum(mask); 0 (with zero gradient) when nothing is valid.

    Example, B = 1, D = 3, valid losses l1, l2 and one invalid entry: compat = (l1 + l2) / 3,
    masked_mean = (l1 + l2) / 2. masked_mean changes the effective learning rate whenever labels are masked.

    Args:
        loss: per-element loss of any shape, e.g. (B, D) or (B, 2, D).
        mask: bool or 0/1 tensor of the same shape.
        mode: "compat" or "masked_mean".

    Returns:
        scalar tensor.
    """
    if mask.shape != loss.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != loss shape {tuple(loss.shape)}")
    weights = mask.to(loss.dtype)
    # where() rather than loss * weights, so a non-finite value at a masked entry cannot leak in as NaN
    masked = torch.where(mask.bool(), loss, torch.zeros_like(loss))
    if mode == "compat":
        return masked.mean()
    if mode == "masked_mean":
        # clamp avoids 0/0 without a host sync: with no valid entry the numerator is 0, so the result is 0
        return masked.sum() / weights.sum().clamp(min=1.0)
    raise ValueError(f"mode must be 'compat' or 'masked_mean'; got {mode!r}")


# --- Flow-DPO and Flow-RWR (docs/numerics.md, Flow-DPO and Flow-RWR) ---------------------------------------------------------

BetaSchedule = Literal["constant", "timestep"]
RwrWeighting = Literal["exp", "raw", "uniform"]


def dpo_beta(beta: float, t: torch.Tensor, schedule: BetaSchedule = "constant") -> torch.Tensor:
    """(B,) beta per sample: `constant` = beta (the paper's Flow-DPO); `timestep` = beta (1 - t)^2, the "direct
    derivation" from Diffusion-DPO (ablation; it vanishes at t -> 1, so noisy steps go unregularised)."""
    if schedule == "constant":
        return torch.full_like(t, float(beta), dtype=torch.float32)
    if schedule == "timestep":
        return float(beta) * (1 - t.float()) ** 2
    raise ValueError(f"beta schedule {schedule!r} is unknown; use constant or timestep")


def flow_dpo_loss(policy_chosen_err: torch.Tensor, policy_rejected_err: torch.Tensor, ref_chosen_err: torch.Tensor,
                  ref_rejected_err: torch.Tensor, beta: torch.Tensor | float) -> tuple[torch.Tensor, dict]:
    """Flow-DPO: per-sample loss (B,) and detached stats.

    Each `*_err` is (B,): the per-sample mean squared velocity error of the policy / reference on the chosen /
    rejected video, all four at the same (t, noise). beta is a float or (B,) (see dpo_beta).
        w_diff = policy_chosen_err - ref_chosen_err,  l_diff = policy_rejected_err - ref_rejected_err
        inside = -(beta / 2) (w_diff - l_diff),        loss = -log sigmoid(inside)
    At LoRA init the policy equals the reference: inside = 0 and loss = ln 2 = 0.693147. Lowering the chosen
    error relative to the reference (w_diff < 0) raises inside and lowers the loss.
    Stats: inside, implicit_acc = 1[inside > 0], reward_margin = inside (the implicit reward of chosen minus
    rejected), w_diff, l_diff and the four errors.
    """
    w_diff = policy_chosen_err - ref_chosen_err
    l_diff = policy_rejected_err - ref_rejected_err
    inside = -0.5 * beta * (w_diff - l_diff)
    loss = -F.logsigmoid(inside)
    stats = {"inside": inside, "implicit_acc": (inside > 0).float(), "reward_margin": inside, "w_diff": w_diff,
             "l_diff": l_diff, "policy_chosen_err": policy_chosen_err, "policy_rejected_err": policy_rejected_err,
             "ref_chosen_err": ref_chosen_err, "ref_rejected_err": ref_rejected_err}
    return loss, {k: v.detach() for k, v in stats.items()}


def rwr_weights(rewards: torch.Tensor, weighting: RwrWeighting = "exp", temperature: float = 1.0,
                normalize: bool = True, batch_rewards: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) Flow-RWR sample weights from rewards (B,).

    exp: w = exp(r / temperature) (the paper's form); raw: w = r; uniform: w = 1 (with chosen-only samples this is
    the SFT baseline). normalize divides by the mean |w| over `batch_rewards` (default: `rewards`), the global
    batch gathered across processes, so the mean weight is 1 and the loss scale does not drift with the reward
    level; exp is computed as exp((r - m) / T) / mean_j exp((r_j - m) / T) with m = max r_j, which is the same
    number without overflow.
    Example: r = (0, ln 3), T = 1, exp: w = (1, 3); normalised: (0.5, 1.5).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    batch = rewards if batch_rewards is None else batch_rewards
    if weighting == "uniform":
        return torch.ones_like(rewards, dtype=torch.float32)
    if weighting == "raw":
        w, all_w = rewards.float(), batch.float()
    elif weighting == "exp":
        top = batch.max().float() if normalize else 0.0
        w, all_w = torch.exp((rewards.float() - top) / temperature), torch.exp((batch.float() - top) / temperature)
    else:
        raise ValueError(f"weighting {weighting!r} is unknown; use exp, raw or uniform")
    if not normalize:
        return w
    scale = all_w.abs().mean()
    if scale <= 0:
        raise ValueError("all reward weights in the batch are 0; use weighting exp or uniform")
    return w / scale


def flow_rwr_loss(err: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Flow-RWR per-sample loss (B,): w * err, err the per-sample mean squared velocity error (B,) and w from
    rwr_weights (B,). As in the paper the (1 - t)^2 factor is omitted. Example: err (2, 4), w (0.5, 1.5) ->
    (1, 6), mean 3.5."""
    return weights.to(err.dtype) * err
