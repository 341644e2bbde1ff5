"""The training objectives of the generator half, over a micro-batch of cached latents: Flow-DPO (`dpo_step`, and
`dpo_split_step` with the same gradient at half the activation memory), Flow-RWR (`rwr_step`) and the Flow-NRG latent
reward model (`latent_rm_step`, and its accuracy by noise level, `latent_rm_accuracy`). The maths is in losses.py and
flow.py (docs/numerics.md, Flow-DPO, Flow-RWR, Flow-NRG); this module feeds it the model's velocities and rewards.

Shapes: latents (B, C, F', H', W'), text states (B, L, D), t (B,) in [0, 1]; `cache` is a LatentCache (or anything
with load_video(path) and load_prompt(prompt)); pairs are labels.Pair with A the chosen side.
"""

from __future__ import annotations

import contextlib
import math

import torch

from videoalign.flow import add_noise, per_sample_mse, velocity_target
from videoalign.gen.lora import adapters_disabled
from videoalign.losses import btt_loss, dpo_beta, flow_dpo_loss, flow_rwr_loss, reduce_loss, rwr_weights


def dpo_step(parts, cache, pairs, t: torch.Tensor, noise: torch.Tensor, beta: float, schedule: str = "constant"):
    """(scalar loss, stats) of a micro-batch of pairs: one t and one noise per pair shared by both videos, chosen and
    rejected through one concatenated forward, the reference under no_grad (a frozen copy, or the same transformer
    with its LoRA disabled)."""
    gen, device = parts.gen, parts.gen.device
    x0_w = torch.stack([cache.load_video(p.path_a) for p in pairs])
    x0_l = torch.stack([cache.load_video(p.path_b) for p in pairs])
    text = gen.pad_text([cache.load_prompt(p.prompt) for p in pairs])
    x0 = torch.cat([x0_w, x0_l]).to(device)  # (2B, ...): chosen rows then rejected rows
    noise2, t2 = torch.cat([noise, noise]).to(device), torch.cat([t, t]).to(device)
    x_t, target = add_noise(x0, noise2, t2), velocity_target(x0, noise2)
    text2 = torch.cat([text, text]).to(device)
    with torch.no_grad():
        if parts.reference is not None:
            v_ref = gen.velocity(x_t, t2, text2, transformer=parts.reference)
        else:
            # through the prepared module (sharded weights under FSDP/ZeRO-3 are gathered by its forward); the
            # adapter flag lives on the plain module's LoRA layers
            with adapters_disabled(parts.transformer):
                v_ref = gen.velocity(x_t, t2, text2, transformer=parts.model)
    v = gen.velocity(x_t, t2, text2, transformer=parts.model)
    err, ref_err = per_sample_mse(v, target), per_sample_mse(v_ref, target)
    b = len(pairs)
    loss, stats = flow_dpo_loss(err[:b], err[b:], ref_err[:b], ref_err[b:], dpo_beta(beta, t, schedule).to(device))
    return loss.mean(), stats


def dpo_split_step(parts, cache, pairs, t: torch.Tensor, noise: torch.Tensor, beta: float, schedule: str,
                   backward, no_sync):
    """dpo_step's gradient, one video's graph at a time; runs the backward passes itself (`backward(loss)`, and
    `no_sync()` for all but the last, so DDP reduces once). Returns the detached loss and the stats.

    With inside_i = -(beta_i / 2) [(e_w - r_w) - (e_l - r_l)] and L = mean_i -log sigmoid(inside_i):
        dL/de_w,i = s_i,  dL/de_l,i = -s_i,  s_i = (beta_i / 2) sigmoid(-inside_i) / B.
    s_i needs both policy errors, so: backward e_w (its graph is freed), forward rejected, compute s_i, scale the
    chosen gradient added since the pair began by s_i, then backward -s_i e_l.
    """
    gen, device = parts.gen, parts.gen.device
    x0_w = torch.stack([cache.load_video(p.path_a) for p in pairs]).to(device)
    x0_l = torch.stack([cache.load_video(p.path_b) for p in pairs]).to(device)
    text = gen.pad_text([cache.load_prompt(p.prompt) for p in pairs]).to(device)
    noise, t = noise.to(device), t.to(device)
    x_w, x_l = add_noise(x0_w, noise, t), add_noise(x0_l, noise, t)
    v_w, v_l = velocity_target(x0_w, noise), velocity_target(x0_l, noise)
    b = len(pairs)
    # the reference at the policy's shapes (one video per forward): beta amplifies kernel-dependent rounding
    with torch.no_grad(), adapters_disabled(parts.transformer):
        ref_w, ref_l = ([per_sample_mse(gen.velocity(x[i:i + 1], t[i:i + 1], text[i:i + 1], transformer=parts.model),
                                        v[i:i + 1]) for i in range(b)] for x, v in ((x_w, v_w), (x_l, v_l)))
    ref_w, ref_l = torch.cat(ref_w), torch.cat(ref_l)
    beta_t = dpo_beta(beta, t, schedule).to(device)
    params = [p for p in parts.transformer.parameters() if p.requires_grad]
    losses, all_stats = [], []
    for i in range(b):
        one = slice(i, i + 1)
        before = [None if p.grad is None else p.grad.detach().clone() for p in params]
        with no_sync():
            e_w = per_sample_mse(gen.velocity(x_w[one], t[one], text[one], transformer=parts.model), v_w[one])
            backward(e_w.sum())
        with no_sync() if i < b - 1 else contextlib.nullcontext():
            e_l = per_sample_mse(gen.velocity(x_l[one], t[one], text[one], transformer=parts.model), v_l[one])
            loss, stats = flow_dpo_loss(e_w.detach(), e_l.detach(), ref_w[one], ref_l[one], beta_t[one])
            scale = (beta_t[one] / 2 * torch.sigmoid(-stats["inside"])).sum() / b
            with torch.no_grad():
                for p, g0 in zip(params, before):
                    if p.grad is not None:
                        p.grad.copy_(scale * p.grad if g0 is None else g0 + scale * (p.grad - g0))
            backward(-scale * e_l.sum())
        losses.append(loss)
        all_stats.append(stats)
    stats = {k: torch.cat([s[k] for s in all_stats]) for k in all_stats[0]}
    return torch.cat(losses).mean().detach(), stats


def rwr_step(parts, cache, videos, step_videos, t: torch.Tensor, noise: torch.Tensor, weighting: str,
             temperature: float, normalize: bool):
    """(scalar loss, stats) of a micro-batch of rewarded videos: per-sample velocity errors weighted by rwr_weights,
    normalised over the step's whole global batch `step_videos` (so 1 and N processes agree)."""
    gen, device = parts.gen, parts.gen.device
    x0 = torch.stack([cache.load_video(v.path) for v in videos]).to(device)
    text = gen.pad_text([cache.load_prompt(v.prompt) for v in videos]).to(device)
    noise, t = noise.to(device), t.to(device)
    rewards = torch.tensor([v.reward or 0.0 for v in videos])
    batch_rewards = torch.tensor([v.reward or 0.0 for v in step_videos])
    w = rwr_weights(rewards, weighting, temperature, normalize, batch_rewards).to(device)
    v = gen.velocity(add_noise(x0, noise, t), t, text, transformer=parts.model)
    err = per_sample_mse(v, velocity_target(x0, noise))
    return flow_rwr_loss(err, w).mean(), {"err": err, "weight": w, "reward": rewards}


# -- the latent reward model of Flow-NRG -------------------------------------------------------------------------

def pair_rewards(model, gen, cache, pairs, t: torch.Tensor, noise: torch.Tensor, device):
    """(r_A, r_B), each (B, D) float32, for pairs noised with the shared (t (B,), noise (B, C, F', H', W')):
    one forward on the concatenated [A; B] batch."""
    x0 = torch.stack([cache.load_video(p.path_a) for p in pairs] + [cache.load_video(p.path_b) for p in pairs])
    text = gen.pad_text([cache.load_prompt(p.prompt) for p in pairs])  # (B, L, D_text)
    t2, noise2 = torch.cat([t, t]).to(device), torch.cat([noise, noise]).to(device)
    x_t = add_noise(x0.to(device), noise2, t2)  # (2B, C, F', H', W'): A rows then B rows
    rewards = model(x_t, t2, torch.cat([text, text]).to(device))  # (2B, D)
    b = len(pairs)
    return rewards[:b], rewards[b:]


def latent_rm_step(model, gen, cache, pairs, dims, t, noise, device, theta: float, reduction: str):
    """Scalar BTT loss of a micro-batch and per-entry stats: correct (B, D) and nontied (B, D) as floats."""
    r_a, r_b = pair_rewards(model, gen, cache, pairs, t, noise, device)
    labels = torch.tensor([p.dim_labels(dims) for p in pairs], dtype=torch.long, device=r_a.device)  # (B, D)
    loss, mask = btt_loss(r_a, r_b, labels, theta)
    nontied = (labels == 1) | (labels == -1)
    correct = nontied & ((r_a - r_b).detach() * labels > 0)
    return reduce_loss(loss, mask, reduction), {"correct": correct.float(), "nontied": nontied.float()}


def train_accuracy(stats: dict) -> dict:
    """The logged figure of latent_rm_step's gathered stats: sign accuracy of r_A - r_B on the non-tied labels."""
    nontied = stats["nontied"].sum()
    return {"train_acc": (stats["correct"].sum() / nontied).item()} if nontied > 0 else {}


def bin_labels(bins: int) -> list[str]:
    """"lo-hi" names of `bins` equal-width bins of [0, 1]: 5 -> 0.0-0.2, 0.2-0.4, ..., 0.8-1.0."""
    def fmt(x: float) -> str:
        text = f"{x:.3f}".rstrip("0")
        return text + "0" if text.endswith(".") else text

    return [f"{fmt(i / bins)}-{fmt((i + 1) / bins)}" for i in range(bins)]


@torch.no_grad()
def latent_rm_accuracy(model, gen, cache, pairs, dims, shape, device, *, seed: int, bins: int,
                       batch_size: int) -> dict:
    """{dim: {bin: {accuracy_without_ties, accuracy_with_ties, pairs}}}: pairwise accuracy of r_A - r_B against
    the labels (masked labels left out; undefined accuracies as None). Pair j in bin b is noised with t uniform in
    the bin and noise from a generator seeded by (seed, b, j), fixed across evaluations."""
    from videoalign.gen.training import step_seed
    from videoalign.labels import INVALID
    from videoalign.metrics import accuracy_with_ties, accuracy_without_ties

    was_training = model.training
    model.eval()
    labels = torch.tensor([p.dim_labels(dims) for p in pairs], dtype=torch.long)  # (N, D)
    out: dict[str, dict] = {d: {} for d in dims}
    for b, name in enumerate(bin_labels(bins)):
        lo, width = b / bins, 1 / bins
        margins = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            ts, noises = [], []
            for j in range(start, start + len(chunk)):
                g = torch.Generator().manual_seed(step_seed(seed + 1, 1_000_000 + b, j))
                ts.append(lo + width * torch.rand(1, generator=g))
                noises.append(torch.randn(shape, generator=g))
            r_a, r_b = pair_rewards(model, gen, cache, chunk, torch.cat(ts), torch.stack(noises), device)
            margins.append((r_a - r_b).float().cpu())
        margin = torch.cat(margins)  # (N, D)
        for d, dim in enumerate(dims):
            valid = labels[:, d] != INVALID
            h, m = labels[valid, d].double().tolist(), margin[valid, d].double().tolist()
            without, with_ties = accuracy_without_ties(h, m), accuracy_with_ties(h, m).accuracy
            out[dim][name] = {"accuracy_without_ties": None if math.isnan(without) else round(without, 6),
                              "accuracy_with_ties": None if math.isnan(with_ties) else round(with_ties, 6),
                              "pairs": len(h)}
    model.train(was_training)
    return out
