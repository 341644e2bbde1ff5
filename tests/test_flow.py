"""Golden and parity tests for videoalign.flow (docs/numerics.md, Flow conventions). Each docstring writes out the arithmetic.

shift_time(t, s) = s t / (1 + (s - 1) t); t = 1 is pure noise.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from videoalign.flow import (
    NUM_TRAIN_TIMESTEPS,
    add_noise,
    euler_step,
    per_sample_mse,
    sample_timesteps,
    sampling_times,
    shift_time,
    velocity_target,
)

# -- shift --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_shift_time_keeps_the_endpoints(shift):
    """s 0 / (1 + 0) = 0 and s / (1 + s - 1) = 1 for every s."""
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert shift_time(t, shift).tolist() == [0.0, 1.0]


def test_shift_time_formula():
    """s = 3: t = 0.5 -> 1.5 / 2 = 0.75; t = 0.25 -> 0.75 / 1.5 = 0.5; t = 0.1 -> 0.3 / 1.2 = 0.25.
    s = 5: t = 0.5 -> 2.5 / 3 = 0.833333. s = 1 is the identity."""
    t = torch.tensor([0.5, 0.25, 0.1], dtype=torch.float64)
    torch.testing.assert_close(shift_time(t, 3.0), torch.tensor([0.75, 0.5, 0.25], dtype=torch.float64))
    assert shift_time(torch.tensor(0.5, dtype=torch.float64), 5.0).item() == pytest.approx(2.5 / 3, abs=1e-12)
    torch.testing.assert_close(shift_time(t, 1.0), t)


def test_shift_moves_time_toward_noise_and_stays_monotone():
    """For s > 1, t' - t = t (1 - t)(s - 1) / (1 + (s - 1) t) > 0 inside (0, 1), and t' increases with t."""
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    shifted = shift_time(t, 3.0)
    assert bool((shifted > t).all())
    assert bool((shifted.diff() > 0).all())


# -- training timesteps -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [3.0, 5.0])
def test_sample_timesteps_indexes_the_diffusers_sigma_table(shift):
    """t = FlowMatchEulerDiscreteScheduler(shift).sigmas[floor(1000 u)], u = sigmoid(n), n ~ N(0, 1) drawn from the
    same generator (SD3's and the authors' Flow-DPO recipe). The table is float32, so agree within 1e-6."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    assert scheduler.sigmas.shape == (NUM_TRAIN_TIMESTEPS,)
    got = sample_timesteps(256, shift=shift, generator=torch.Generator().manual_seed(0))
    u = torch.sigmoid(torch.randn(256, generator=torch.Generator().manual_seed(0)))
    want = scheduler.sigmas[(u * NUM_TRAIN_TIMESTEPS).long()]
    assert got.dtype == torch.float32 and got.shape == (256,)
    torch.testing.assert_close(got, want.float(), atol=1e-6, rtol=0)
    # the whole table is the shift of 1 - i / 1000, which is what sample_timesteps computes
    i = torch.arange(NUM_TRAIN_TIMESTEPS, dtype=torch.float64)
    torch.testing.assert_close(scheduler.sigmas.double(), shift_time(1 - i / 1000, shift), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["logit_normal", "uniform"])
def test_sample_timesteps_range(mode):
    """i in [0, 999], so t in [shift_time(0.001), shift_time(1)] = [0.003 / 1.002, 1] = [0.0029940, 1] (s = 3)."""
    t = sample_timesteps(20000, shift=3.0, mode=mode, generator=torch.Generator().manual_seed(1))
    lowest = 3 * 0.001 / (1 + 2 * 0.001)
    assert t.min().item() >= lowest - 1e-7
    assert t.max().item() <= 1.0
    assert t.min().item() < 0.2 and t.max().item() > 0.99  # both ends are reached, not a constant


def test_sample_timesteps_clamps_u_equal_to_one():
    """mean 50, std 0: u = sigmoid(50) rounds to 1.0 in float32 -> floor(1000 u) = 1000, clamped to entry 999 ->
    t = shift_time(0.001) = 0.003 / 1.002 = 0.0029940. mean -50: u ~ 0 -> entry 0 -> t = 1."""
    low = sample_timesteps(3, shift=3.0, mean=50.0, std=0.0)
    high = sample_timesteps(3, shift=3.0, mean=-50.0, std=0.0)
    torch.testing.assert_close(low, torch.full((3,), 0.003 / 1.002), atol=1e-7, rtol=0)
    assert high.tolist() == [1.0, 1.0, 1.0]


def test_sample_timesteps_uniform_mode():
    """uniform: u ~ U[0, 1) from the same generator, t = 1 - floor(1000 u) / 1000 at shift 1 (grid of 1/1000);
    its mean is 1 - 0.4995 = 0.5005 in expectation (0.01 tolerance at n = 20000)."""
    got = sample_timesteps(20000, shift=1.0, mode="uniform", generator=torch.Generator().manual_seed(2))
    u = torch.rand(20000, generator=torch.Generator().manual_seed(2))
    want = 1 - (u * 1000).long().double() / 1000  # floor(1000 u) taken in float32, as the library does
    torch.testing.assert_close(got, want.float(), atol=1e-7, rtol=0)
    assert got.mean().item() == pytest.approx(0.5005, abs=0.01)
    assert torch.allclose(got * 1000, (got * 1000).round(), atol=1e-3)  # on the 1/1000 grid
    with pytest.raises(ValueError, match="uniform"):
        sample_timesteps(2, mode="beta")


# -- noising and the velocity target ------------------------------------------------------------------------

def test_add_noise_endpoints():
    """x_t at t = 0 is x0 and at t = 1 is the noise, exactly (the factors are 1 and 0)."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 2, 4, 4, generator=g), torch.randn(2, 3, 2, 4, 4, generator=g)
    x_t = add_noise(x0, noise, torch.tensor([0.0, 1.0]))
    assert torch.equal(x_t[0], x0[0])
    assert torch.equal(x_t[1], noise[1])


def test_add_noise_and_velocity_golden():
    """x0 = 1, noise = -3, t = 0.25: x_t = 0.75 * 1 + 0.25 * (-3) = 0; v = noise - x0 = -4;
    x_t + (0 - t) v = 0 + 1 = 1 = x0 and x_t + (1 - t) v = 0 - 3 = noise."""
    x0, noise = torch.ones(1, 2), torch.full((1, 2), -3.0)
    x_t = add_noise(x0, noise, torch.tensor([0.25]))
    v = velocity_target(x0, noise)
    assert x_t.tolist() == [[0.0, 0.0]]
    assert v.tolist() == [[-4.0, -4.0]]
    assert (x_t + (0 - 0.25) * v).tolist() == [[1.0, 1.0]]
    assert (x_t + (1 - 0.25) * v).tolist() == [[-3.0, -3.0]]


def test_velocity_moves_x_t_back_to_x0_and_to_noise():
    """On the straight path x_t + (0 - t) v = x0 and x_t + (1 - t) v = noise for any t (float rounding only);
    t of shape (B,) broadcasts per sample."""
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(4, 16, 3, 4, 4, generator=g), torch.randn(4, 16, 3, 4, 4, generator=g)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    x_t = add_noise(x0, noise, t)
    v = velocity_target(x0, noise)
    tb = t.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(x_t + (0 - tb) * v, x0, atol=1e-6, rtol=0)
    torch.testing.assert_close(x_t + (1 - tb) * v, noise, atol=1e-6, rtol=0)
    # row 2 is (1 - 0.7) x0 + 0.7 noise, independent of the other rows' t
    torch.testing.assert_close(x_t[2], 0.3 * x0[2] + 0.7 * noise[2], atol=1e-6, rtol=0)


def test_per_sample_mse_golden():
    """Row 0: pred (1, 2, 0, 0) vs target 0 -> (1 + 4 + 0 + 0) / 4 = 1.25.
    Row 1: pred (3, 4, 5, 6) vs target (3, 2, 5, 3) -> (0 + 4 + 0 + 9) / 4 = 3.25. Mean over all non-batch dims;
    bfloat16 inputs give float32 (all values exact in bf16)."""
    pred = torch.tensor([[1.0, 2.0, 0.0, 0.0], [3.0, 4.0, 5.0, 6.0]]).view(2, 1, 2, 2)
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, 2.0, 5.0, 3.0]]).view(2, 1, 2, 2)
    got = per_sample_mse(pred, target)
    assert got.tolist() == [1.25, 3.25]
    low = per_sample_mse(pred.bfloat16(), target.bfloat16())
    assert low.dtype == torch.float32 and low.tolist() == [1.25, 3.25]


# -- sampling -----------------------------------------------------------------------------------------------

def test_sampling_times_golden():
    """N = 4, s = 3: linspace(1, 0, 5) = (1, 0.75, 0.5, 0.25, 0) -> shifted (1, 2.25/2.5, 1.5/2, 0.75/1.5, 0)
    = (1, 0.9, 0.75, 0.5, 0). float64, N + 1 entries, strictly decreasing."""
    times = sampling_times(4, 3.0)
    assert times.dtype == torch.float64
    torch.testing.assert_close(times, torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0], dtype=torch.float64))
    many = sampling_times(50, 5.0)
    assert many.shape == (51,) and many[0] == 1 and many[-1] == 0 and bool((many.diff() < 0).all())
    with pytest.raises(ValueError, match=">= 1"):
        sampling_times(0, 3.0)


@pytest.mark.parametrize("steps, shift", [(4, 3.0), (10, 5.0), (50, 3.0)])
def test_sampling_times_vs_diffusers_schedulers(steps, shift):
    """What diffusers 0.42 builds for `set_timesteps(N)`, and how our grid relates to it.

    - Wan's shipped UniPCMultistepScheduler(use_flow_sigmas, flow_shift=s): shift(linspace(1, 1/1000, N + 1)[:-1])
      followed by 0. Ours is shift(linspace(1, 0, N + 1)): the same grid except that it spans [0, 1] instead of
      [1/1000, 1], so the two agree within s/1000 (the shift's slope is at most s; for N = 4, s = 3: 0.9001 vs 0.9, 0.7504 vs 0.75, 0.5010 vs 0.5).
    - FlowMatchEulerDiscreteScheduler(shift=s) spaces N points from 1 to its sigma_min, which is the already
      shifted last table entry shift(1/1000), and then shifts them again: shift(linspace(1, shift(1/1000), N))
      followed by 0. Its last step therefore jumps from shift(shift(0.001)) = 0.0089 (s = 3) straight to 0 and
      its interior differs from ours by up to ~0.1 (N = 4: 0.8577, 0.6022, 0.0089 vs 0.9, 0.75, 0.5). We keep
      the evenly spaced grid (the docstring of sampling_times says so) and test our formula above.
    """
    ours = sampling_times(steps, shift)

    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    unipc.set_timesteps(steps)
    assert unipc.sigmas.shape == (steps + 1,) and unipc.sigmas[-1] == 0
    want_unipc = torch.cat([shift_time(torch.linspace(1, 1 / 1000, steps + 1, dtype=torch.float64)[:-1], shift),
                            torch.zeros(1, dtype=torch.float64)])
    torch.testing.assert_close(unipc.sigmas.double(), want_unipc, atol=2e-6, rtol=0)  # float32 table
    # the unshifted grids differ by at most 1/1000; the shift's slope is at most s (at t = 0)
    torch.testing.assert_close(unipc.sigmas.double(), ours, atol=shift * 1e-3, rtol=0)

    euler = FlowMatchEulerDiscreteScheduler(shift=shift)
    euler.set_timesteps(steps)
    sigma_min = shift_time(torch.tensor(1 / 1000, dtype=torch.float64), shift)
    want_euler = torch.cat([shift_time(torch.linspace(1, float(sigma_min), steps, dtype=torch.float64), shift),
                            torch.zeros(1, dtype=torch.float64)])
    torch.testing.assert_close(euler.sigmas.double(), want_euler, atol=1e-5, rtol=0)
    assert ours[0] == euler.sigmas[0] == 1 and ours[-1] == euler.sigmas[-1] == 0
    assert (ours - euler.sigmas.double()).abs().max().item() > 1e-3  # the interiors really differ


def test_euler_step_golden_and_exact_on_the_straight_path():
    """x_t = 2, v = 4, t = 0.5 -> t' = 0.25: 2 + (0.25 - 0.5) * 4 = 1.
    With the exact velocity v = noise - x0, any chain of Euler steps stays on x_t = (1 - t) x0 + t noise and the
    last step (t' = 0) lands on x0."""
    assert euler_step(torch.tensor([2.0]), torch.tensor([4.0]), 0.5, 0.25).tolist() == [1.0]
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 16, 3, 4, 4, generator=g)
    times = sampling_times(6, 3.0).tolist()
    x = noise.clone()
    for t, t_next in itertools.pairwise(times):
        x = euler_step(x, velocity_target(x0, noise), t, t_next)
        torch.testing.assert_close(x, add_noise(x0, noise, torch.full((2,), t_next)), atol=1e-5, rtol=0)
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


def test_euler_step_keeps_the_latent_dtype():
    """v in float32 is cast to x_t's dtype (bf16 latents stay bf16): 1 + (0 - 1) * 0.5 = 0.5, exact in bf16."""
    out = euler_step(torch.ones(3, dtype=torch.bfloat16), torch.full((3,), 0.5), 1.0, 0.0)
    assert out.dtype == torch.bfloat16 and out.tolist() == [0.5, 0.5, 0.5]
