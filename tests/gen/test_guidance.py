"""videoalign.gen.guidance (Flow-NRG, docs/numerics.md, Flow-NRG): the guided-velocity formula on golden values, the hook's
exactness at scale 0 (bit-identical to unguided sampling), and its effect on the seeded tiny-random Wan with a
hand-set latent reward whose two heads read the means of latent channels 0 and 1: guidance raises the guided
reward, more for a larger scale, and the weights pick which channel moves. CPU, float32."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from videoalign.flow import sampling_times
from videoalign.gen.families import TINY_RANDOM
from videoalign.gen.generator import load_generator
from videoalign.gen.guidance import guided_velocity, make_guidance_hook, parse_guidance_weights

LATENT = (16, 3, 4, 4)
SEEDS = [0, 1, 2, 3]
STEPS = 8
SHIFT = 3.0


@pytest.fixture(scope="module")
def gen():
    return load_generator(TINY_RANDOM, "float32")


@pytest.fixture(scope="module")
def text(gen):
    return gen.pad_text(gen.encode_prompts(["a red fox", "a cat", "a boat at sea", "snow"]))


@pytest.fixture(scope="module")
def channel_reward(gen, make_channel_reward):
    """r_CH0(x) = mean of latent channel 0, r_CH1(x) = of channel 1 (tests/conftest.py)."""
    return make_channel_reward(gen.transformer).requires_grad_(False)


def _channel_means(x: torch.Tensor) -> torch.Tensor:
    """(B, 2): the means of latent channels 0 and 1 of (B, C, F, H, W)."""
    return x[:, :2].flatten(2).mean(dim=2)


def _sample(gen, text, hook=None, **kwargs):
    return gen.sample(text, SEEDS, LATENT, steps=STEPS, shift=SHIFT, guidance_scale=1.0, velocity_hook=hook,
                      **kwargs)


# -- the formula --------------------------------------------------------------------------------------------------

def test_guided_velocity_golden_values():
    """t = 0.5: t / (1 - t) = 1, so scale 2 gives v - 2 grad = 3 - 2 * 0.5 = 2; t = 0.75: factor 3 -> 3 - 3 = 0;
    t = 0.2: factor 0.25 -> 3 - 0.25 = 2.75; t = 1 (and scale 0): v itself."""
    v, grad = torch.full((2, 3), 3.0), torch.full((2, 3), 0.5)
    assert torch.equal(guided_velocity(v, grad, 0.5, 2.0), torch.full((2, 3), 2.0))
    assert torch.equal(guided_velocity(v, grad, 0.75, 2.0), torch.zeros(2, 3))
    assert torch.equal(guided_velocity(v, grad, 0.2, 2.0), torch.full((2, 3), 2.75))
    assert guided_velocity(v, grad, 1.0, 2.0) is v
    assert guided_velocity(v, torch.full((2, 3), float("nan")), 0.5, 0.0) is v
    # a (B,) t: each row its own factor, rows at t = 1 unchanged
    rows = guided_velocity(v, grad, torch.tensor([0.5, 1.0]), 2.0)
    assert torch.equal(rows, torch.tensor([[2.0] * 3, [3.0] * 3]))
    assert guided_velocity(v, grad, torch.tensor([1.0, 1.0]), 2.0) is v


# -- the hook -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [False, True])
def test_scale_zero_reproduces_unguided_sampling(gen, text, channel_reward, cfg):
    kwargs = {"negative_text": gen.pad_text(gen.encode_prompts([""] * 4)), "guidance_scale": 5.0} if cfg else {}
    record = []
    hook = make_guidance_hook(channel_reward, text, [1.0, 0.0], scale=0.0, record=record)
    run = {"steps": STEPS, "shift": SHIFT, "guidance_scale": 1.0, **kwargs}
    plain = gen.sample(text, SEEDS, LATENT, **run)
    hooked = gen.sample(text, SEEDS, LATENT, velocity_hook=hook, **run)
    assert torch.equal(hooked, plain)
    # scale 0 still records the rewards along the way, without gradients
    assert len(record) == STEPS and all(r["grad_rms"] == [0.0] * 4 for r in record)


def test_channel_reward_is_the_channel_mean(channel_reward, text):
    x = torch.randn(4, *LATENT, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        rewards = channel_reward(x, 0.4, text)
    torch.testing.assert_close(rewards, _channel_means(x), rtol=1e-4, atol=1e-5)


def test_guidance_raises_the_reward_with_the_scale(gen, text, channel_reward):
    """Weights 1:0 (CH0). Every sample's channel-0 mean grows with the scale 0 < 1 < 4, and the model's own reward
    at t = 0 agrees. The record holds one entry per step with the rewards of the latents entering it."""
    means = {}
    for scale in (0.0, 1.0, 4.0):
        record = []
        x0 = _sample(gen, text, make_guidance_hook(channel_reward, text, [1.0, 0.0], scale, record=record))
        means[scale] = _channel_means(x0)[:, 0]
        with torch.no_grad():
            torch.testing.assert_close(channel_reward(x0, 0.0, text)[:, 0], means[scale], rtol=1e-4, atol=1e-5)
        times = sampling_times(STEPS, SHIFT)[:-1].tolist()
        assert [r["t"] for r in record] == times
        assert set(record[0]) == {"t", "weighted", "rewards", "grad_rms"}
        assert set(record[0]["rewards"]) == {"CH0", "CH1"} and len(record[0]["weighted"]) == 4
        assert record[0]["weighted"] == record[0]["rewards"]["CH0"]
        # the first step (t = 1) is never guided
        assert record[0]["grad_rms"] == [0.0] * 4
        if scale > 0:
            assert all(g > 0 for g in record[1]["grad_rms"])
    assert bool((means[1.0] > means[0.0]).all()) and bool((means[4.0] > means[1.0]).all()), means
    # r is linear with gradient 1/N on channel 0 (N = 48 elements), so if the velocity ignored x every guided step
    # would add (t_i - t_i+1) * scale * t_i / (1 - t_i) / N to the channel-0 mean: 0.256 at scale 4. The
    # transformer's response to the moved latents changes that by a few per cent.
    times = sampling_times(STEPS, SHIFT).tolist()
    open_loop = 4.0 / math.prod(LATENT[1:]) * sum((t - t_next) * t / (1 - t)
                                                 for t, t_next in itertools.pairwise(times) if t < 1)
    torch.testing.assert_close(means[4.0] - means[0.0], torch.full((4,), open_loop), rtol=0.1, atol=0)


def test_weights_select_the_dimension(gen, text, channel_reward):
    base = _channel_means(_sample(gen, text))
    moved = {}
    for weights in ("CH0=1", "CH1=1"):
        lam = parse_guidance_weights(weights, ["CH0", "CH1"])
        moved[weights] = _channel_means(_sample(gen, text, make_guidance_hook(channel_reward, text, lam, 4.0))) - base
    ch0_only, ch1_only = moved["CH0=1"], moved["CH1=1"]
    assert bool((ch0_only[:, 0] > ch0_only[:, 1].abs()).all()), ch0_only
    assert bool((ch1_only[:, 1] > ch1_only[:, 0].abs()).all()), ch1_only


def test_hook_errors(gen, text, channel_reward):
    with pytest.raises(ValueError, match=r"weights: expected 2 values \(CH0:CH1\), got 3"):
        make_guidance_hook(channel_reward, text, [1.0, 0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="finite"):
        make_guidance_hook(channel_reward, text, [1.0, 0.0], float("inf"))
    hook = make_guidance_hook(channel_reward, text[:3], [1.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="guidance text: expected a batch of 4"):
        _sample(gen, text, hook)
    # a batch of 1 is repeated
    one = make_guidance_hook(channel_reward, text[:1], [1.0, 0.0], 1.0)
    many = make_guidance_hook(channel_reward, text[:1].expand(4, -1, -1), [1.0, 0.0], 1.0)
    assert torch.equal(_sample(gen, text, one), _sample(gen, text, many))


# -- weights ------------------------------------------------------------------------------------------------------

def test_parse_guidance_weights():
    dims = ["VQ", "MQ", "TA"]
    assert parse_guidance_weights("0.1:0.1:0.8", dims) == {"VQ": 0.1, "MQ": 0.1, "TA": 0.8}
    assert parse_guidance_weights("TA=1", dims) == {"VQ": 0.0, "MQ": 0.0, "TA": 1.0}
    assert parse_guidance_weights("MQ=0.5,VQ=0.5", dims) == {"VQ": 0.5, "MQ": 0.5, "TA": 0.0}
    cases = [("1:1", "needs 3 values as VQ:MQ:TA"), ("VQ=1,MQ", r"expected name=value parts .* got 'MQ'"),
             ("VQ=x", "values must be numbers"), ("a:b:c", "values must be numbers"),
             ("nan:1:1", "expected finite numbers"), ("0:0:0", "positive sum"), ("XX=1", "unknown dimensions XX")]
    for text, message in cases:
        with pytest.raises(ValueError, match=message):
            parse_guidance_weights(text, dims)
