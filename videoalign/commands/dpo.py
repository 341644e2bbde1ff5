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

from videoalign.commands.align import AlignConfig, Objective, run_training


@dataclass
class DpoConfig(AlignConfig):
    #: DPO beta, for the per-sample mean error (see the module docstring for its scale)
    beta: float = 5000.0
    #: constant (the paper's Flow-DPO) or timestep: beta (1 - t)^2 (ablation; hacks the reward at high noise)
    beta_schedule: Literal["constant", "timestep"] = "constant"
    output_dir: str = "runs/dpo"

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


def dpo_step(cfg: DpoConfig, parts, cache, pairs, t: torch.Tensor, noise: torch.Tensor):
    """Loss and stats of a micro-batch of pairs. Latents (B, C, F', H', W'); text (B, L, D)."""
    from videoalign.flow import add_noise, per_sample_mse, velocity_target
    from videoalign.generator import adapters_disabled
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


def run(cfg: DpoConfig) -> int:
    from videoalign.align_data import read_preference_pairs
    from videoalign.distributed import make_accelerator

    pairs, problems = read_preference_pairs(cfg.data, cfg.videos_root)
    accelerator = make_accelerator(cfg.device, gradient_accumulation_steps=cfg.grad_accum)
    objective = Objective(
        name="pair", items=pairs, videos=lambda p: [p.chosen, p.rejected], prompt=lambda p: p.prompt,
        loss=lambda parts, cache, batch, _all, t, noise: dpo_step(cfg, parts, cache, batch, t, noise),
        needs_reference=True)
    return run_training(cfg, objective, accelerator, problems)
