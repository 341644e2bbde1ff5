"""Flow-NRG: noisy reward guidance at inference time (docs/numerics.md, Flow-NRG).

The target is p~(x0 | c) proportional to p_ref(x0 | c) exp(r(x0, c))^w. For rectified flow (alpha_t = 1 - t,
sigma_t = t) it is sampled by shifting the velocity at every Euler step from t_i to t_{i+1}:

    v~(x_t) = v(x_t) - w * t / (1 - t) * grad_x r_phi(x_t, t, c),    r_phi = sum_d lambda_d r_phi,d

where v is the CFG-combined velocity, r_phi the latent reward model (latent_reward.py), w the guidance scale and
lambda the per-dimension weights; the step at t = 1 (pure noise) is left unguided. The sampler must be Euler
(Generator.sample is): changing v is not the same as changing the latents afterwards for multistep schedulers.

`guided_velocity` is the formula; `make_guidance_hook` wires it into `Generator.sample(velocity_hook=...)`.
"""

from __future__ import annotations

import hashlib
import math

import torch

from videoalign.gen.latent_reward import LatentRewardModel, reward_gradient, weight_vector


def guided_velocity(v: torch.Tensor, grad: torch.Tensor, t: float | torch.Tensor, scale: float) -> torch.Tensor:
    """v~ = v - scale * t / (1 - t) * grad, and v itself (the same object) when t >= 1 or scale == 0.

    Worked example: t = 0.5 gives t / (1 - t) = 1, so with scale 2, v = 3 and grad = 0.5:
    v~ = 3 - 2 * 1 * 0.5 = 2. At t = 0.75 the factor is 3 (v~ = 3 - 2 * 3 * 0.5 = 0); at t = 1 nothing changes.

    Args:
        v: (B, ...) velocity (CFG-combined).
        grad: (B, ...) gradient of the weighted reward with respect to x_t.
        t: the current time: a float, or a (B,) tensor (rows with t >= 1 are left unchanged).
        scale: the guidance scale w (the paper's Table 5: 100).

    Returns:
        (B, ...) guided velocity in v's dtype.
    """
    if scale == 0:
        return v
    if not isinstance(t, torch.Tensor):
        if t >= 1:
            return v
        return v - (scale * t / (1 - t)) * grad.to(v.dtype)
    t = t.to(device=v.device, dtype=torch.float64).reshape(-1, *([1] * (v.dim() - 1)))  # (B, 1, ...)
    if bool((t >= 1).all()):
        return v
    factor = torch.where(t < 1, t / (1 - t), torch.zeros_like(t))  # the inf at t = 1 is never selected
    return v - (scale * factor).to(v.dtype) * grad.to(v.dtype)


def make_guidance_hook(model: LatentRewardModel, text: torch.Tensor, weights, scale: float,
                       record: list | None = None):
    """A `velocity_hook(x, t, v) -> v` for Generator.sample that applies Flow-NRG with the latent reward model.

    At each step it computes g = grad_x sum_d lambda_d r_phi,d(x, t, text) (reward_gradient: a detached copy of
    x, the model's weights untouched) and returns guided_velocity(v, g, t, scale). With scale 0, or at t >= 1,
    it returns v itself and computes no gradient, so scale 0 reproduces unguided sampling bit for bit.

    Args:
        model: the latent reward model (frozen in effect: only input gradients are taken).
        text: (B, L, text_dim) the conditional prompts' text states (not the negative prompt), B = the number of
            samples (a batch of 1 is repeated).
        weights: lambda, D numbers in model.dims order, a (D,) tensor or {dim: w} (parse_guidance_weights).
        scale: the guidance scale w.
        record: if a list, one entry per step is appended: {"t": t, "weighted": [B] sum_d lambda_d r_d,
            "rewards": {dim: [B]}, "grad_rms": [B] (0 where unguided)}, the rewards of the latents entering the
            step. Recording costs one no-grad forward at the steps that are not guided.

    Returns:
        velocity_hook(x (B, C, F', H', W'), t float, v (B, C, F', H', W')) -> v.
    """
    if not math.isfinite(scale):
        raise ValueError(f"guidance scale must be a finite number, got {scale}")
    w = weight_vector(model, weights)  # (D,) checked now, not at the first step
    device = next(model.parameters()).device

    def velocity_hook(x: torch.Tensor, t: float, v: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if text.shape[0] not in (1, batch):
            raise ValueError(f"guidance text: expected a batch of {batch} (or 1), got {text.shape[0]}")
        cond = text.expand(batch, *text.shape[1:]) if text.shape[0] == 1 else text
        guided = scale != 0 and t < 1
        if not guided and record is None:
            return v
        x_in, cond = x.to(device), cond.to(device)
        if guided:
            grad, rewards = reward_gradient(model, x_in, t, cond, w)
        else:
            with torch.no_grad():
                rewards = model(x_in, t, cond).float()
            grad = None
        if record is not None:
            rewards = rewards.cpu()
            record.append({
                "t": float(t),
                "weighted": (rewards * w).sum(dim=1).tolist(),
                "rewards": {d: rewards[:, i].tolist() for i, d in enumerate(model.dims)},
                "grad_rms": ([0.0] * batch if grad is None
                             else grad.float().pow(2).flatten(1).mean(dim=1).sqrt().cpu().tolist()),
            })
        if grad is None:
            return v
        return guided_velocity(v, grad.to(v.device), t, scale)

    return velocity_hook


def parse_guidance_weights(text: str, dims: list[str]) -> dict[str, float]:
    """Guidance weights lambda from `"0.1:0.1:0.8"` (one value per dimension, in dims order) or
    `"TA=1"` / `"VQ=0.5,MQ=0.5"` (unnamed dimensions weigh 0). Weights must be finite and >= 0 with a positive
    sum; they are not normalised (r_phi = sum_d lambda_d r_phi,d, so the sum scales the guidance like w does).
    Built on preferences.parse_weights, with clearer errors for malformed `name=value` parts and non-finite
    values."""
    from videoalign.preferences import parse_weights

    if "=" in text:
        bad = [p for p in text.replace(":", ",").split(",") if p.strip() and "=" not in p]
        if bad:
            raise ValueError(f"--weights {text!r}: expected name=value parts such as TA=1 (dimensions "
                             f"{', '.join(dims)}), got {', '.join(repr(b) for b in bad)}")
    try:
        weights = parse_weights(text, dims)
    except ValueError as exc:
        if "could not convert" not in str(exc):
            raise
        raise ValueError(f"--weights {text!r}: values must be numbers, e.g. "
                         f"{':'.join(['1'] * len(dims))}") from None
    if not all(math.isfinite(v) for v in weights.values()):
        raise ValueError(f"--weights {text!r}: expected finite numbers, got {weights}")
    return {d: weights[d] for d in dims}


def latents_sha1(x) -> str:
    """A fingerprint of one sample's final latents (float32 bytes): equal fingerprints = bit-identical samples."""
    return hashlib.sha1(x.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def guided_sample(gen, rm, weights, text, negative, seeds: list[int], shape, cfg, scale: float):
    """Sample one batch with guidance scale `scale` (cfg: steps, shift, guidance_scale): (latents (B, C, F', H',
    W'), per-row trajectories of the latent reward, per-row final rewards at t = 0). Without a latent reward model:
    plain sampling, empty trajectories, no rewards."""

    record = [] if rm is not None else None
    hook = make_guidance_hook(rm, text, weights, scale, record=record) if rm is not None else None
    x0 = gen.sample(text, seeds, shape, cfg.steps, cfg.shift, cfg.guidance_scale, negative, velocity_hook=hook)
    batch = len(seeds)
    if rm is None:
        return x0, [[] for _ in range(batch)], [None] * batch
    trajectories = [[{"t": step["t"], "weighted": step["weighted"][b],
                      "rewards": {d: v[b] for d, v in step["rewards"].items()}, "grad_rms": step["grad_rms"][b]}
                     for step in record] for b in range(batch)]
    device = next(rm.parameters()).device
    with torch.no_grad():
        rewards = rm(x0.to(device), 0.0, text.to(device)).float().cpu()  # (B, D) at t = 0
    w = torch.tensor([weights[d] for d in rm.dims])
    finals = [{"weighted": float((rewards[b] * w).sum()), "rewards": dict(zip(rm.dims, rewards[b].tolist()))}
              for b in range(batch)]
    return x0, trajectories, finals
