"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# --- shared data (../shared/data beside the repo) --------------------------------------------
# Real clips and reference outputs. Someone who clones only the project does not have them, so a
# test that needs them skips; CI always has them, so there (env CI set) a missing folder fails.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared data folder; skips (or fails under CI) when it is absent."""
    if not SHARED_DATA.is_dir():
        msg = f"shared data folder {SHARED_DATA} not found (it lives beside the repo as ../shared/data)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must provide it")
        pytest.skip(msg)
    return SHARED_DATA


# --- a latent reward model with known rewards (guidance tests) ------------------------------
def _channel_reward(transformer):
    """dims CH0, CH1 with r_CH0(x) = mean of latent channel 0 and r_CH1(x) = mean of channel 1, to ~1e-6.

    k = 1 block, made the identity by zeroing its attention and FFN output layers. The patch embedding writes each
    2x2 patch's mean of channel 0 to features 0 and (negated) 1, of channel 1 to features 2 and 3, and a constant
    +b, -b (b = 1000) to features 4 and 5; so every token has mean 0 and variance ~ 2 b^2 / D (D = 32), and the
    layer norm scales feature 0 to s0 / (b sqrt(2 / D)) up to a relative (s0^2 + s1^2) / (2 b^2). A head weight of
    b sqrt(2 / D) on feature 0 (2) then gives the token mean of s0 (s1): the channel's mean over the latent."""
    import math

    import torch

    from videoalign.gen.latent_reward import LatentRewardConfig, build_latent_reward

    model = build_latent_reward(transformer, LatentRewardConfig(k=1, dims=["CH0", "CH1"]))
    b, dim = 1000.0, model.inner_dim
    with torch.no_grad():
        block = model.blocks[0]
        for layer in (block.attn1.to_out[0], block.attn2.to_out[0], block.ffn.net[2]):
            layer.weight.zero_()
            layer.bias.zero_()
        conv = model.patch_embedding
        conv.weight.zero_()
        conv.bias.zero_()
        patch = conv.weight.shape[2] * conv.weight.shape[3] * conv.weight.shape[4]
        for feature, channel, sign in ((0, 0, 1), (1, 0, -1), (2, 1, 1), (3, 1, -1)):
            conv.weight[feature, channel] = sign / patch
        conv.bias[4], conv.bias[5] = b, -b
        for head, feature in (("CH0", 0), ("CH1", 2)):
            model.heads[head].weight.zero_()
            model.heads[head].weight[0, feature] = b * math.sqrt(2 / dim)
    return model


@pytest.fixture(scope="session")
def make_channel_reward():
    """`make_channel_reward(transformer)`: a latent reward model whose rewards are latent channel means."""
    return _channel_reward
