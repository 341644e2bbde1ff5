"""`videoalign dpo`: Flow-DPO on a rectified-flow text-to-video model (docs/numerics.md, Flow-DPO).

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

from videoalign.gen.settings import AlignConfig


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


def run(cfg: DpoConfig) -> int:
    from videoalign.distributed import make_accelerator
    from videoalign.gen.objectives import dpo_split_step, dpo_step
    from videoalign.gen.training import run_alignment
    from videoalign.labels import read_preferences
    from videoalign.trainer import check_output_dir

    accelerator = make_accelerator(cfg.device, gradient_accumulation_steps=cfg.grad_accum)
    check_output_dir(cfg, accelerator)
    found = read_preferences(cfg.data, cfg.videos_root)
    if cfg.backward == "split":
        def loss(parts, cache, batch, _step_items, t, noise):
            return dpo_split_step(parts, cache, batch, t, noise, cfg.beta, cfg.beta_schedule, accelerator.backward,
                                  lambda: accelerator.no_sync(parts.model))
    else:
        def loss(parts, cache, batch, _step_items, t, noise):
            return dpo_step(parts, cache, batch, t, noise, cfg.beta, cfg.beta_schedule)
    return run_alignment(cfg, "pair", found.pairs, lambda p: [p.path_a, p.path_b], loss, accelerator,
                         found.problems, needs_reference=True, extra=found.note())
