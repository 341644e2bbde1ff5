"""`videoalign dpo`: Flow-DPO on a rectified-flow text-to-video model (REFERENCE.md 10.4-10.5).

For each pair (chosen x0_w, rejected x0_l, prompt c) one t and one noise are drawn and shared by both videos;
chosen and rejected go through one concatenated forward, and the reference is the same transformer with its
LoRA disabled (no second copy in memory; full fine-tuning keeps a frozen copy). err = per-sample mean squared
velocity error; loss = -log sigmoid(-(beta/2) [(e_w - e_ref_w) - (e_l - e_ref_l)]) with a constant beta, or
beta (1 - t)^2 with `beta_schedule: timestep` (the paper's ablation).

beta and the reduction: err is a per-sample *mean*, so beta here equals a sum-reduced beta times the latent size
(2,096,640 for Wan 81x480x832). The authors' image Flow-DPO uses 100 on SD3.5-M; Diffusion-DPO 5000.

1 GPU:  videoalign dpo --recipe recipes/dpo/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl --beta 5000
N GPUs: accelerate launch --num_processes N -m videoalign dpo --recipe recipes/dpo/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from videoalign.gen.align import AlignConfig, Objective, run_training


@dataclass
class DpoConfig(AlignConfig):
    #: DPO beta, for the per-sample mean error (see the module docstring for its scale)
    beta: float = 5000.0
    #: constant (the paper's Flow-DPO) or timestep: beta (1 - t)^2 (ablation; hacks the reward at high noise)
    beta_schedule: Literal["constant", "timestep"] = "constant"
    #: joint: chosen and rejected in one concatenated forward and backward (fastest); split: the same gradient
    #: with one video's graph alive at a time (about half the activation memory; for LoRA, it keeps one copy of
    #: the adapter's gradients)
    backward: Literal["joint", "split"] = "joint"
    output_dir: str = "runs/dpo"

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.backward == "split" and not self.lora.enabled:
            raise ValueError("backward: split keeps a copy of the trainable gradients, which for full fine-tuning "
                             "is a second copy of the model; use backward: joint with lora.enabled: false")


def dpo_step(cfg: DpoConfig, parts, cache, pairs, t: torch.Tensor, noise: torch.Tensor):
    """Loss and stats of a micro-batch of pairs. Latents (B, C, F', H', W'); text (B, L, D)."""
    from videoalign.flow import add_noise, per_sample_mse, velocity_target
    from videoalign.gen.generator import adapters_disabled
    from videoalign.losses import dpo_beta, flow_dpo_loss

    gen, device = parts.gen, parts.gen.device
    x0_w = torch.stack([cache.load_video(p.chosen) for p in pairs])
    x0_l = torch.stack([cache.load_video(p.rejected) for p in pairs])
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
    loss, stats = flow_dpo_loss(err[:b], err[b:], ref_err[:b], ref_err[b:],
                                dpo_beta(cfg.beta, t, cfg.beta_schedule).to(device))
    return loss.mean(), stats


def dpo_split_step(cfg: DpoConfig, parts, cache, pairs, t: torch.Tensor, noise: torch.Tensor, backward,
                   no_sync):
    """dpo_step's gradient, one video's graph at a time; runs the backward passes itself (`backward(loss)`, and
    `no_sync()` for all but the last, so DDP reduces once). Returns the detached loss and the stats.

    With inside_i = -(beta_i / 2) [(e_w - r_w) - (e_l - r_l)] and L = mean_i -log sigmoid(inside_i):
        dL/de_w,i = s_i,  dL/de_l,i = -s_i,  s_i = (beta_i / 2) sigmoid(-inside_i) / B.
    s_i needs both policy errors, so: backward e_w (its graph is freed), forward rejected, compute s_i, scale the
    chosen gradient added since the pair began by s_i, then backward -s_i e_l.
    """
    import contextlib

    from videoalign.flow import add_noise, per_sample_mse, velocity_target
    from videoalign.gen.generator import adapters_disabled
    from videoalign.losses import dpo_beta, flow_dpo_loss

    gen, device = parts.gen, parts.gen.device
    x0_w = torch.stack([cache.load_video(p.chosen) for p in pairs]).to(device)
    x0_l = torch.stack([cache.load_video(p.rejected) for p in pairs]).to(device)
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
    beta = dpo_beta(cfg.beta, t, cfg.beta_schedule).to(device)
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
            loss, stats = flow_dpo_loss(e_w.detach(), e_l.detach(), ref_w[one], ref_l[one], beta[one])
            scale = (beta[one] / 2 * torch.sigmoid(-stats["inside"])).sum() / b
            with torch.no_grad():
                for p, g0 in zip(params, before):
                    if p.grad is not None:
                        p.grad.copy_(scale * p.grad if g0 is None else g0 + scale * (p.grad - g0))
            backward(-scale * e_l.sum())
        losses.append(loss)
        all_stats.append(stats)
    stats = {k: torch.cat([s[k] for s in all_stats]) for k in all_stats[0]}
    return torch.cat(losses).mean().detach(), stats


def run(cfg: DpoConfig) -> int:
    from videoalign.align_data import read_preference_pairs
    from videoalign.distributed import make_accelerator

    pairs, problems = read_preference_pairs(cfg.data, cfg.videos_root)
    accelerator = make_accelerator(cfg.device, gradient_accumulation_steps=cfg.grad_accum)
    if cfg.backward == "split":
        def loss(parts, cache, batch, _all, t, noise):
            return dpo_split_step(cfg, parts, cache, batch, t, noise, accelerator.backward,
                                  lambda: accelerator.no_sync(parts.model))
    else:
        def loss(parts, cache, batch, _all, t, noise):
            return dpo_step(cfg, parts, cache, batch, t, noise)
    objective = Objective(name="pair", items=pairs, videos=lambda p: [p.chosen, p.rejected],
                          prompt=lambda p: p.prompt, loss=loss, needs_reference=True)
    return run_training(cfg, objective, accelerator, problems)
