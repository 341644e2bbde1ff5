"""`videoalign rwr`: Flow-RWR and the SFT baseline on a rectified-flow text-to-video model (docs/numerics.md,
Flow-RWR).

L = mean_i w_i ||v_theta(x_t,i, t_i, c_i) - (noise_i - x0_i)||^2 (per-sample mean, no (1 - t)^2 factor), with
weights from the rewards: exp (w = exp(r / T), the paper's), raw (w = r) or uniform (w = 1). normalize divides by
the mean |w| of the step's global batch, so the loss scale does not drift with the reward level and does not
depend on the process count. `chosen_only: true` + `weighting: uniform` is the paper's SFT baseline.
Rewards: the weighted VideoReward scores of a relabel pair file (both sides of each pair) or of score's JSONL
(`weights`, default 1:1:1 = the paper's reward r = (VQ + MQ + TA) / 3).

1 GPU:  videoalign rwr --recipe recipes/rwr/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl
N GPUs: accelerate launch --num_processes N -m videoalign rwr --recipe recipes/rwr/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from videoalign.gen.settings import AlignConfig


@dataclass
class RwrConfig(AlignConfig):
    #: exp (w = exp(r / temperature)), raw (w = r) or uniform (w = 1; with chosen_only, the SFT baseline)
    weighting: Literal["exp", "raw", "uniform"] = "exp"
    #: temperature T of exp weighting
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


def run(cfg: RwrConfig) -> int:
    from videoalign.data import read_rewarded_videos
    from videoalign.distributed import make_accelerator
    from videoalign.gen.objectives import rwr_step
    from videoalign.gen.training import run_alignment
    from videoalign.preferences import parse_weights
    from videoalign.trainer import check_output_dir

    accelerator = make_accelerator(cfg.device, gradient_accumulation_steps=cfg.grad_accum)
    check_output_dir(cfg, accelerator)
    weights = parse_weights(cfg.weights, ["VQ", "MQ", "TA"]) if cfg.weights is not None else None
    videos, problems = read_rewarded_videos(cfg.data, cfg.videos_root, weights,
                                            need_rewards=cfg.weighting != "uniform")
    if cfg.chosen_only:
        videos = [v for v in videos if v.chosen]

    def loss(parts, cache, batch, step_items, t, noise):
        return rwr_step(parts, cache, batch, step_items, t, noise, cfg.weighting, cfg.temperature, cfg.normalize)

    return run_alignment(cfg, "video", videos, lambda v: [v.path], loss, accelerator, problems)
