"""`videoalign rwr`: Flow-RWR and the SFT baseline on a rectified-flow text-to-video model (REFERENCE.md 10.6).

L = mean_i w_i ||v_theta(x_t,i, t_i, c_i) - (noise_i - x0_i)||^2 (per-sample mean, no (1 - t)^2 factor), with
weights from the rewards: exp (w = exp(r / T), the paper's), raw (w = r) or uniform (w = 1). normalize divides by
the mean |w| of the step's global batch, so the loss scale does not drift with the reward level and does not
depend on the process count. `chosen_only: true` + `weighting: uniform` is the paper's SFT baseline.
Rewards: the weighted normalised VideoReward scores of a relabel pair file (both sides of each pair) or of
score's JSONL (`weights`, default 1:1:1 = the paper's (VQ + MQ + TA) / 3).

1 GPU:  videoalign rwr --recipe recipes/rwr/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl
N GPUs: accelerate launch --num_processes N -m videoalign rwr --recipe recipes/rwr/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from videoalign.gen.align import AlignConfig, Objective, run_training


@dataclass
class RwrConfig(AlignConfig):
    #: exp (w = exp(r / temperature)), raw (w = r) or uniform (w = 1; with chosen_only, the SFT baseline)
    weighting: Literal["exp", "raw", "uniform"] = "exp"
    temperature: float = 1.0
    #: divide the weights by their mean |w| over the step's global batch
    normalize: bool = True
    #: train on the chosen side of each pair only
    chosen_only: bool = False
    #: dimension weights of the reward, e.g. 1:1:1 or 0:0:1 (TA only); default: the pair file's own
    weights: str | None = None
    output_dir: str = "runs/rwr"

    def __post_init__(self):
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.weights is not None:
            from videoalign.preferences import parse_weights

            parse_weights(self.weights, ["VQ", "MQ", "TA"])


def rwr_step(cfg: RwrConfig, parts, cache, videos, global_videos, t: torch.Tensor, noise: torch.Tensor):
    from videoalign.flow import add_noise, per_sample_mse, velocity_target
    from videoalign.losses import flow_rwr_loss, rwr_weights

    gen, device = parts.gen, parts.gen.device
    x0 = torch.stack([cache.load_video(v.path) for v in videos]).to(device)
    text = gen.pad_text([cache.load_prompt(v.prompt) for v in videos]).to(device)
    noise, t = noise.to(device), t.to(device)
    rewards = torch.tensor([v.reward or 0.0 for v in videos])
    batch_rewards = torch.tensor([v.reward or 0.0 for v in global_videos])
    w = rwr_weights(rewards, cfg.weighting, cfg.temperature, cfg.normalize, batch_rewards).to(device)
    v = gen.velocity(add_noise(x0, noise, t), t, text, transformer=parts.model)
    err = per_sample_mse(v, velocity_target(x0, noise))
    return flow_rwr_loss(err, w).mean(), {"err": err, "weight": w, "reward": rewards}


def run(cfg: RwrConfig) -> int:
    from videoalign.align_data import read_rewarded_videos
    from videoalign.distributed import make_accelerator

    weights = None
    if cfg.weights is not None:
        from videoalign.preferences import parse_weights

        weights = parse_weights(cfg.weights, ["VQ", "MQ", "TA"])
    videos, problems = read_rewarded_videos(cfg.data, cfg.videos_root, weights,
                                            need_rewards=cfg.weighting != "uniform")
    if cfg.chosen_only:
        videos = [v for v in videos if v.chosen]
    accelerator = make_accelerator(cfg.device, gradient_accumulation_steps=cfg.grad_accum)
    objective = Objective(
        name="video", items=videos, videos=lambda v: [v.path], prompt=lambda v: v.prompt,
        loss=lambda parts, cache, batch, all_items, t, noise: rwr_step(cfg, parts, cache, batch, all_items, t, noise))
    return run_training(cfg, objective, accelerator, problems)
