"""Rectified-flow maths (docs/numerics.md, Flow conventions): noising, velocity targets, timestep sampling and shift, Euler steps.

Conventions: t in [0, 1] is diffusers' sigma and t = 1 is pure noise.
    x_t = (1 - t) * x0 + t * noise          (add_noise)
    v   = noise - x0                        (velocity_target; the transformer predicts v)
    x_{t'} = x_t + (t' - t) * v             (euler_step, t' < t)
    shift: t' = s t / (1 + (s - 1) t)       (shift_time; s = flow_shift, 3.0 for Wan 480p, 5.0 for 720p)
Pure torch: no models, no configs.
"""

from __future__ import annotations

from typing import Literal

import torch

TimestepSampling = Literal["logit_normal", "uniform"]

#: entries of FlowMatchEulerDiscreteScheduler's sigma table, which training-time timesteps index (10.1)
NUM_TRAIN_TIMESTEPS = 1000


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = s t / (1 + (s - 1) t): maps 0 -> 0 and 1 -> 1 and, for s > 1, moves t toward the noise end."""
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(n: int, shift: float = 3.0, mode: TimestepSampling = "logit_normal", mean: float = 0.0,
                     std: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) float32 training timesteps, as SD3 and the authors' Flow-DPO draw them (docs/numerics.md, Flow conventions).

    u = sigmoid(N(mean, std)) (logit_normal) or U[0, 1) (uniform, the paper's pseudo-code); then entry
    i = floor(1000 u) of the shifted 1000-entry sigma table of FlowMatchEulerDiscreteScheduler(shift), i.e.
    t = shift_time(1 - i / 1000). So t lies in [shift_time(0.001), 1].
    """
    if mode == "logit_normal":
        u = torch.sigmoid(mean + std * torch.randn(n, generator=generator))
    elif mode == "uniform":
        u = torch.rand(n, generator=generator)
    else:
        raise ValueError(f"timestep sampling {mode!r} is unknown; use logit_normal or uniform")
    index = (u * NUM_TRAIN_TIMESTEPS).long().clamp(0, NUM_TRAIN_TIMESTEPS - 1)
    return shift_time(1 - index.double() / NUM_TRAIN_TIMESTEPS, shift).float()


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise, with t of shape (B,) broadcast over x0's (B, ...)."""
    t = t.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = noise - x0, the velocity along the straight path from x0 (t = 0) to noise (t = 1)."""
    return noise - x0


def per_sample_mse(v_pred: torch.Tensor, v_target: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error over all non-batch dimensions, in float32 (docs/numerics.md, Flow-DPO's `err`)."""
    diff = v_pred.float() - v_target.float()
    return diff.pow(2).flatten(1).mean(dim=1)


def sampling_times(steps: int, shift: float) -> torch.Tensor:
    """(steps + 1,) float64 times from 1 (noise) to 0 (data): linspace(1, 0), shifted. Consecutive entries are
    the (t_i, t_{i+1}) of an Euler sampler. This is UniPCMultistepScheduler(use_flow_sigmas, flow_shift)'s grid
    with its 1/1000 end moved to 0; FlowMatchEulerDiscreteScheduler(shift).set_timesteps differs (it shifts its
    already shifted sigma_min again and then jumps to 0), see tests/test_flow.py."""
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def euler_step(x_t: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """x_{t_next} = x_t + (t_next - t) v (t_next < t: a step toward the data)."""
    return x_t + (t_next - t) * v.to(x_t.dtype)
