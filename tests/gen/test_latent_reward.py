"""videoalign.gen.latent_reward on the seeded tiny-random Wan (2 blocks, width 32; docs/numerics.md, Flow-NRG): the first-k-block
backbone reproduces the transformer's own hidden states bit for bit, rewards start at exactly 0, depend on t and the
text, survive save -> load unchanged (dtypes included), loading is strict, and reward_gradient matches finite
differences without touching any parameter's .grad. CPU, float32 (float64 for the finite differences)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from videoalign.gen.families import TINY_RANDOM
from videoalign.gen.generator import load_generator
from videoalign.gen.latent_reward import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    LatentRewardConfig,
    build_latent_reward,
    load_latent_reward,
    reward_gradient,
    save_latent_reward,
)

LATENT = (16, 3, 4, 4)  # 9 frames of 32 x 32


@pytest.fixture(scope="module")
def gen():
    return load_generator(TINY_RANDOM, "float32")


def _inputs(g, seed: int = 0):
    """x_t (2, 16, 3, 4, 4), t (2,), padded text (2, 32, 32)."""
    x_t = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(seed))
    return x_t, torch.tensor([0.3, 0.8]), g.pad_text(g.encode_prompts(["a red fox jumps", "a cat"]))


def _randomise_heads(model, seed: int = 1):
    """Non-zero heads (and pooling score), so rewards carry information."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("heads.", "pool.")):
                p.copy_(torch.randn(p.shape, generator=rng) * 0.5)
    return model


def _transformer_states(g, k, x_t, t, text):
    """The transformer's own hidden states after block k, captured while it computes the velocity."""
    captured = {}
    handle = g.transformer.blocks[k - 1].register_forward_hook(lambda m, i, o: captured.setdefault("h", o))
    try:
        g.velocity(x_t, t, text)
    finally:
        handle.remove()
    return captured["h"]


# -- the backbone mirrors WanTransformer3DModel.forward ----------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2])
def test_backbone_reproduces_transformer_states(gen, k):
    x_t, t, text = _inputs(gen)
    model = build_latent_reward(gen.transformer, LatentRewardConfig(k=k))
    with torch.no_grad():
        assert torch.equal(model.features(x_t, t, text), _transformer_states(gen, k, x_t, t, text))


def test_backbone_reproduces_transformer_states_bfloat16():
    """Mixed dtypes as from_pretrained leaves them (bf16 blocks, fp32 norms, time embedder and rope)."""
    g = load_generator(TINY_RANDOM, "bfloat16")
    x_t, t, text = _inputs(g)
    model = build_latent_reward(g.transformer, LatentRewardConfig(k=2))
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert model.blocks[0].scale_shift_table.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(model.features(x_t, t, text), _transformer_states(g, 2, x_t, t, text))
        assert model(x_t, t, text).dtype == torch.float32


def test_build_copies_and_leaves_transformer_alone(gen):
    model = build_latent_reward(gen.transformer, LatentRewardConfig(k=1))
    assert model.blocks[0].attn1.to_q.weight.data_ptr() != gen.transformer.blocks[0].attn1.to_q.weight.data_ptr()
    # the generator's transformer is frozen; the copy trains in full unless freeze_backbone
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in gen.transformer.parameters())
    frozen = build_latent_reward(gen.transformer, LatentRewardConfig(k=1, freeze_backbone=True))
    trainable = sorted({n.split(".")[0] for n, p in frozen.named_parameters() if p.requires_grad})
    assert trainable == ["heads"]
    assert (model.latent_channels, model.text_dim, model.patch_size, model.inner_dim) == (16, 32, (1, 2, 2), 32)
    assert model.source_config["num_layers"] == 2 and model.source_config["text_dim"] == 32


# -- outputs ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [LatentRewardConfig(k=1), LatentRewardConfig(k=2, pooling="attention"),
                                 LatentRewardConfig(k=2, dims=["A", "B"], head_hidden=8)])
def test_initial_rewards_are_exactly_zero(gen, cfg):
    """Every head's last layer starts at zero: r = 0 for any input, shape (B, D), float32."""
    x_t, t, text = _inputs(gen)
    rewards = build_latent_reward(gen.transformer, cfg)(x_t, t, text)
    assert rewards.shape == (2, len(cfg.dims)) and rewards.dtype == torch.float32
    assert torch.equal(rewards, torch.zeros(2, len(cfg.dims)))


def test_attention_pooling_starts_as_mean_pooling(gen):
    x_t, t, text = _inputs(gen)
    mean = _randomise_heads(build_latent_reward(gen.transformer, LatentRewardConfig(k=1)))
    attention = build_latent_reward(gen.transformer, LatentRewardConfig(k=1, pooling="attention"))
    attention.heads.load_state_dict(mean.heads.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(attention(x_t, t, text), mean(x_t, t, text), rtol=1e-6, atol=1e-6)


def test_rewards_depend_on_t_and_text(gen):
    x_t, t, text = _inputs(gen)
    model = _randomise_heads(build_latent_reward(gen.transformer, LatentRewardConfig(k=2)))
    with torch.no_grad():
        base = model(x_t, t, text)
        assert base.abs().min() > 0
        assert not torch.allclose(model(x_t, t.flip(0), text), base)
        assert not torch.allclose(model(x_t, t, text.flip(0)), base)
        # a float t means the same t for every row
        assert torch.equal(model(x_t, 0.3, text), model(x_t, torch.tensor([0.3, 0.3]), text))


def test_gradient_checkpointing_changes_nothing(gen):
    x_t, t, text = _inputs(gen)
    model = _randomise_heads(build_latent_reward(gen.transformer, LatentRewardConfig(k=2)))
    grad, rewards = reward_gradient(model, x_t, t, text, [1.0, 2.0, 3.0])
    model.gradient_checkpointing = True
    grad_ckpt, rewards_ckpt = reward_gradient(model, x_t, t, text, [1.0, 2.0, 3.0])
    assert torch.equal(rewards, rewards_ckpt)
    torch.testing.assert_close(grad, grad_ckpt, rtol=0, atol=0)


# -- saving and loading -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [LatentRewardConfig(k=1), LatentRewardConfig(k=2, pooling="attention", head_hidden=8,
                                                                              dims=["MQ", "TA"])])
def test_save_load_round_trip(gen, tmp_path, cfg):
    x_t, t, text = _inputs(gen)
    model = _randomise_heads(build_latent_reward(gen.transformer, cfg))
    save_latent_reward(model, cfg, tmp_path)
    loaded = load_latent_reward(tmp_path)
    assert loaded.cfg == cfg and loaded.dims == cfg.dims and len(loaded.blocks) == cfg.k
    assert loaded.source_config == model.source_config
    with torch.no_grad():
        assert torch.equal(loaded(x_t, t, text), model(x_t, t, text))
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["transformer"]["num_layers"] == cfg.k and meta["source_num_layers"] == 2
    # the safetensors file works as the path too
    assert load_latent_reward(tmp_path / WEIGHTS_FILE).cfg == cfg


def test_save_load_keeps_dtypes(tmp_path):
    g = load_generator(TINY_RANDOM, "bfloat16")
    x_t, t, text = _inputs(g)
    model = _randomise_heads(build_latent_reward(g.transformer, LatentRewardConfig(k=1)))
    save_latent_reward(model, None, tmp_path)
    loaded = load_latent_reward(tmp_path)
    dtypes = {n: p.dtype for n, p in model.state_dict().items()}
    assert {n: p.dtype for n, p in loaded.state_dict().items()} == dtypes
    assert loaded.rope.freqs_cos.dtype == model.rope.freqs_cos.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(loaded(x_t, t, text), model(x_t, t, text))


def test_load_is_strict(gen, tmp_path):
    save_latent_reward(build_latent_reward(gen.transformer, LatentRewardConfig(k=1)), None, tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    state = load_file(str(weights))
    missing = dict(state)
    del missing["heads.TA.weight"]
    save_file(missing, str(weights))
    with pytest.raises(ValueError, match=r"missing \(heads\.TA\.weight\)"):
        load_latent_reward(tmp_path)
    save_file({**state, "blocks.1.norm2.weight": torch.zeros(32)}, str(weights))
    with pytest.raises(ValueError, match=r"unexpected \(blocks\.1\.norm2\.weight\)"):
        load_latent_reward(tmp_path)
    save_file({k: v for k, v in state.items() if k != "rope.freqs_sin"}, str(weights))
    with pytest.raises(ValueError, match=r"rope\.freqs_sin expected shape \(32, 16\), got missing"):
        load_latent_reward(tmp_path)
    save_file({**state, "heads.TA.weight": torch.zeros(1, 16)}, str(weights))
    with pytest.raises(ValueError, match="heads.TA.weight: checkpoint"):
        load_latent_reward(tmp_path)
    # a config that names other dimensions does not fit the saved heads
    save_file(state, str(weights))
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["reward"]["dims"] = ["VQ", "MQ"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"unexpected \(heads\.TA\.bias"):
        load_latent_reward(tmp_path)
    with pytest.raises(ValueError, match="no config.json"):
        load_latent_reward(tmp_path / "nowhere")


def test_save_refuses_a_config_of_another_architecture(gen, tmp_path):
    model = build_latent_reward(gen.transformer, LatentRewardConfig(k=1))
    with pytest.raises(ValueError, match="k: expected the model's 1, got 2"):
        save_latent_reward(model, LatentRewardConfig(k=2), tmp_path)


# -- errors -------------------------------------------------------------------------------------------------------

def test_k_larger_than_the_transformer(gen):
    with pytest.raises(ValueError, match=r"k = 3 is larger than the transformer's 2 blocks"):
        build_latent_reward(gen.transformer, LatentRewardConfig(k=3))


@pytest.mark.parametrize("kwargs, field", [({"k": 0}, "k"), ({"k": 1.5}, "k"), ({"dims": []}, "dims"),
                                           ({"dims": ["VQ", "VQ"]}, "dims"), ({"dims": ["a.b"]}, "dims"),
                                           ({"pooling": "max"}, "pooling"), ({"head_hidden": 0}, "head_hidden"),
                                           ({"freeze_backbone": "yes"}, "freeze_backbone")])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        LatentRewardConfig(**kwargs)


def test_check_compatible(gen):
    model = build_latent_reward(gen.transformer, LatentRewardConfig(k=1))
    model.check_compatible(LATENT, 32)
    model.check_compatible((2, *LATENT), 32)
    cases = [((8, 3, 4, 4), 32, "latent channels: expected 16, got 8"),
             (LATENT, 4096, "text width: expected 32, got 4096"),
             ((16, 3, 5, 4), 32, "latent height: expected a multiple of the patch size 2, got 5"),
             ((16, 3, 4, 66), 32, "latent width: expected at most 64"),
             ((16, 4, 4), 32, r"latent shape: expected \(C, F', H', W'\)")]
    for shape, text_dim, message in cases:
        with pytest.raises(ValueError, match=message):
            model.check_compatible(shape, text_dim)
    x_t, t, text = _inputs(gen)
    with pytest.raises(ValueError, match="text width: expected 32, got 16"):
        model(x_t, t, text[..., :16])


# -- the gradient -------------------------------------------------------------------------------------------------

def test_reward_gradient_matches_finite_differences(gen):
    """Central differences of the weighted reward 1 r_VQ - 2 r_MQ + 0.5 r_TA, on three coordinates and along one
    random direction. The model runs in float64, but Wan's blocks compute their norms and residual adds in float32
    internally, so the step is 0.03 (smaller steps drown in float32 rounding) and the tolerance 0.2 %."""
    x_t, t, text = _inputs(gen)
    model = _randomise_heads(build_latent_reward(gen.transformer, LatentRewardConfig(k=2))).double()
    x_t, text = x_t.double(), text.double()
    weights = torch.tensor([1.0, -2.0, 0.5])
    grad, rewards = reward_gradient(model, x_t, t, text, weights)
    assert grad.shape == x_t.shape and grad.dtype == torch.float64 and rewards.shape == (2, 3)
    assert all(p.grad is None for p in model.parameters()) and all(p.requires_grad for p in model.parameters())
    assert not x_t.requires_grad

    def slope(direction, eps=0.03):
        with torch.no_grad():
            plus = (model(x_t + eps * direction, t, text) * weights.double()).sum()
            minus = (model(x_t - eps * direction, t, text) * weights.double()).sum()
        return float(plus - minus) / (2 * eps)

    for index in [(0, 0, 0, 0, 0), (0, 5, 1, 2, 3), (1, 15, 2, 3, 1)]:
        unit = torch.zeros_like(x_t)
        unit[index] = 1.0
        estimate = slope(unit)
        assert abs(float(grad[index]) - estimate) <= 2e-3 * abs(estimate) + 2e-5, (index, grad[index], estimate)
    direction = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    direction /= direction.norm()
    estimate = slope(direction)
    assert abs(float((grad * direction).sum()) - estimate) <= 2e-3 * abs(estimate)
    # rows do not interact: row 1's gradient does not depend on row 0's latents
    grad_row1, _ = reward_gradient(model, x_t[1:], t[1:], text[1:], weights)
    torch.testing.assert_close(grad_row1, grad[1:])


def test_reward_gradient_inside_no_grad_and_weight_errors(gen):
    x_t, t, text = _inputs(gen)
    model = _randomise_heads(build_latent_reward(gen.transformer, LatentRewardConfig(k=1)))
    with torch.no_grad():
        grad, rewards = reward_gradient(model, x_t, t, text, {"TA": 1.0})
    assert grad.abs().sum() > 0 and not grad.requires_grad and not rewards.requires_grad
    # {TA: 1} == (0, 0, 1)
    assert torch.equal(grad, reward_gradient(model, x_t, t, text, [0.0, 0.0, 1.0])[0])
    with pytest.raises(ValueError, match=r"weights: expected 3 values \(VQ:MQ:TA\), got 2"):
        reward_gradient(model, x_t, t, text, [1.0, 1.0])
    with pytest.raises(ValueError, match="unknown dimensions XX"):
        reward_gradient(model, x_t, t, text, {"XX": 1.0})


def test_the_saved_format_name_is_stable(tmp_path):
    """Folders saved before the package moved latent_reward.py into gen/ say "videoalign.latent_reward"; the name is
    part of the file format, not the module path, and must not change (docs/formats.md, Training outputs)."""
    from videoalign.gen.latent_reward import LATENT_REWARD_FORMAT

    assert LATENT_REWARD_FORMAT == "videoalign.latent_reward"
