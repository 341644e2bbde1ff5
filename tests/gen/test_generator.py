"""videoalign.gen.generator on the seeded tiny-random Wan (docs/numerics.md, Flow conventions and Flow-DPO): parity with diffusers'
WanPipeline for text and latents, the transformer's timestep scale, LoRA (init, gradients, the disabled-adapter
reference, save/load/fuse through WanLoraLoaderMixin), saving a pipeline, sampling, and the family checks.
Everything runs on the CPU in float32 in a few seconds."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import WanPipeline

from videoalign.gen.families import TINY_RANDOM, WAN, WAN_LORA_TARGETS, family_of
from videoalign.gen.generator import load_generator, save_pipeline
from videoalign.gen.lora import adapters_disabled, add_lora, load_lora, lora_state, save_lora
from videoalign.gen.tiny import tiny_random_components

PROMPTS = ["a red fox jumps over a frozen river", "a cat", "  a   cat  "]
LATENT = (16, 3, 4, 4)  # 9 frames of 32 x 32 -> (C, (9 - 1)/4 + 1, 32/8, 32/8)


@pytest.fixture(scope="module")
def gen():
    """Shared read-only generator; tests that add LoRA load their own (loading takes ~0.1 s)."""
    return load_generator(TINY_RANDOM, "float32")


def _pipe(g) -> WanPipeline:
    return WanPipeline(tokenizer=g.tokenizer, text_encoder=g.text_encoder, vae=g.vae, transformer=g.transformer,
                       scheduler=tiny_random_components()["scheduler"])


def _inputs(g, seed: int = 0):
    """x_t (2, 16, 3, 4, 4), t (2,) and padded text (2, 32, 32)."""
    rng = torch.Generator().manual_seed(seed)
    x_t = torch.randn(2, *LATENT, generator=rng)
    return x_t, torch.tensor([0.3, 0.8]), g.pad_text(g.encode_prompts(PROMPTS[:2]))


def _video(seed: int = 0) -> torch.Tensor:
    """uint8 (9, 32, 32, 3): a smooth gradient plus noise, so the VAE sees structure."""
    rng = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 200, 32).view(1, 1, 32, 1) + torch.linspace(0, 40, 9).view(9, 1, 1, 1)
    frames = ramp.expand(9, 32, 32, 3) + 30 * torch.rand(9, 32, 32, 3, generator=rng)
    return frames.clamp(0, 255).to(torch.uint8)


# -- text ---------------------------------------------------------------------------------------------------

def test_encode_prompts_returns_real_token_rows_and_pad_text_pads_zeros(gen):
    """One (n_i, 32) float32 tensor per prompt, n_i = its attention-mask length (tokens + </s>); pad_text puts
    them in (B, max_length = 32, 32) with exact zeros after row n_i. Whitespace is cleaned as WanPipeline does,
    so "  a   cat  " encodes like "a cat"."""
    embeds = gen.encode_prompts(PROMPTS)
    lengths = gen.tokenizer(PROMPTS[:2], padding="max_length", max_length=32).attention_mask
    assert [e.shape[0] for e in embeds[:2]] == [sum(m) for m in lengths]
    assert embeds[0].shape[0] > embeds[1].shape[0] > 1
    assert all(e.dtype == torch.float32 and e.shape[1] == 32 for e in embeds)
    assert all(bool(e.abs().sum(dim=1).gt(0).all()) for e in embeds)  # real rows are not zero
    assert torch.equal(embeds[1], embeds[2])
    padded = gen.pad_text(embeds)
    assert padded.shape == (3, gen.text_max_length, 32) and gen.text_max_length == 32
    for row, e in zip(padded, embeds):
        assert torch.equal(row[:e.shape[0]], e)
        assert not row[e.shape[0]:].any()


def test_encode_prompts_equals_wan_pipeline(gen):
    """pad_text(encode_prompts(p)) is exactly WanPipeline._get_t5_prompt_embeds(p, max_sequence_length=32)."""
    want = _pipe(gen)._get_t5_prompt_embeds(PROMPTS, max_sequence_length=gen.text_max_length,
                                            device=torch.device("cpu"), dtype=torch.float32)
    assert torch.equal(gen.pad_text(gen.encode_prompts(PROMPTS)), want)


def test_long_prompts_are_truncated_to_max_length(gen):
    """A prompt longer than max_length keeps exactly max_length rows (truncation, no error)."""
    (e,) = gen.encode_prompts([" ".join(["river"] * 100)])
    assert e.shape == (gen.text_max_length, 32)


# -- video latents ------------------------------------------------------------------------------------------

def test_encode_video_normalises_the_vae_mode(gen):
    """encode_video: pixels / 127.5 - 1 as (1, 3, F, H, W) -> vae.encode(...).latent_dist.mode() -> (z - mean) /
    std per channel with the VAE config's lists. 9 x 32 x 32 frames -> (16, 3, 4, 4)."""
    frames = _video()
    z = gen.encode_video(frames)
    assert z.shape == LATENT == WAN.latent_shape(9, 32, 32) and z.dtype == torch.float32
    pixels = frames.permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5 - 1
    assert pixels.min() >= -1 and pixels.max() <= 1
    with torch.no_grad():
        raw = gen.vae.encode(pixels).latent_dist.mode()[0]  # (16, 3, 4, 4)
    mean = torch.tensor(gen.vae.config.latents_mean).view(16, 1, 1, 1)
    std = torch.tensor(gen.vae.config.latents_std).view(16, 1, 1, 1)
    assert not torch.allclose(mean, torch.zeros_like(mean)) and not torch.allclose(std, torch.ones_like(std))
    torch.testing.assert_close(z, (raw - mean) / std, rtol=0, atol=1e-6)
    torch.testing.assert_close(z * std + mean, raw, rtol=0, atol=1e-5)  # the inverse decode applies


def test_decode_inverts_the_normalisation(gen):
    """decode(z) = vae.decode(z * std + mean), mapped from [-1, 1] to uint8 (B, F, H, W, 3); decode(encode(frames))
    has the input's shape. WanPipeline writes the same inverse as latents / (1 / std) + mean, which rounds
    differently in float32, so its frames agree within one grey level."""
    z = gen.encode_video(_video()).unsqueeze(0)  # (1, 16, 3, 4, 4)
    frames = gen.decode(z)
    assert frames.shape == (1, 9, 32, 32, 3) and frames.dtype == torch.uint8
    mean = torch.tensor(gen.vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(gen.vae.config.latents_std).view(1, 16, 1, 1, 1)

    def to_uint8(video):  # (1, 3, F, H, W) in [-1, 1] -> (1, F, H, W, 3)
        return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)

    with torch.no_grad():
        ours = to_uint8(gen.vae.decode(z * std + mean).sample)
        pipeline = to_uint8(gen.vae.decode(z / (1.0 / std) + mean).sample)
        unnormalised = to_uint8(gen.vae.decode(z).sample)
    assert torch.equal(frames, ours)
    assert (frames.int() - pipeline.int()).abs().max() <= 1
    assert (frames.int() - unnormalised.int()).abs().max() > 10  # the normalisation matters
    assert frames.float().std() > 0  # not a constant image


# -- velocity -----------------------------------------------------------------------------------------------

def test_velocity_feeds_t_times_1000_to_the_transformer(gen):
    """velocity(x, t, text) == transformer(x, timestep = 1000 t, text); feeding t itself gives another output,
    so the scale is really used."""
    x_t, t, text = _inputs(gen)
    with torch.no_grad():
        got = gen.velocity(x_t, t, text)
        want = gen.transformer(hidden_states=x_t, timestep=t * 1000, encoder_hidden_states=text,
                               return_dict=False)[0]
        unscaled = gen.transformer(hidden_states=x_t, timestep=t, encoder_hidden_states=text,
                                   return_dict=False)[0]
    assert got.shape == x_t.shape and got.dtype == torch.float32
    assert torch.equal(got, want)
    assert (got - unscaled).abs().max() > 1e-3


def test_bfloat16_casts_like_from_pretrained(tmp_path):
    """load_generator(dtype="bfloat16") leaves each part in the dtypes from_pretrained(torch_dtype=bf16) gives:
    diffusers keeps the transformer's `_keep_in_fp32_modules` in float32 (time embedder, norms and the
    `scale_shift_table` parameters), transformers keeps UMT5's `wo` in float32 for float16 only, so the text
    encoder is all bf16; the VAE is float32. velocity returns float32, close to the float32 model's."""
    from diffusers import WanTransformer3DModel
    from transformers import UMT5EncoderModel

    low = load_generator(TINY_RANDOM, "bfloat16")
    parts = tiny_random_components()
    parts["transformer"].save_pretrained(tmp_path / "transformer")
    parts["text_encoder"].save_pretrained(tmp_path / "text_encoder")
    ref_transformer = WanTransformer3DModel.from_pretrained(tmp_path / "transformer", torch_dtype=torch.bfloat16)
    ref_text = UMT5EncoderModel.from_pretrained(tmp_path / "text_encoder", dtype=torch.bfloat16)

    def dtypes(module):
        return {n: p.dtype for n, p in [*module.named_parameters(), *module.named_buffers()]}

    assert dtypes(low.transformer) == dtypes(ref_transformer)
    assert dtypes(low.text_encoder) == dtypes(ref_text)
    assert low.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert low.transformer.scale_shift_table.dtype == torch.float32
    assert low.transformer.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert low.text_encoder.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in low.vae.parameters())
    full = load_generator(TINY_RANDOM, "float32")
    x_t, t, text = _inputs(full)
    with torch.no_grad():
        v_low, v_full = low.velocity(x_t, t, text), full.velocity(x_t, t, text)
    assert v_low.dtype == torch.float32
    assert (v_low - v_full).abs().max() < 0.1 * v_full.abs().max()


# -- LoRA ---------------------------------------------------------------------------------------------------

def _perturb_lora_b(transformer, seed: int = 0) -> None:
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=rng))


def test_add_lora_leaves_the_model_unchanged_and_trains_only_lora():
    """B = 0 at init -> same output exactly. 2 blocks x 8 targets (q/k/v/o of attn1 and attn2) x (A, B) = 32
    trainable tensors; after backward only they have gradients, and at init only B's are non-zero (dL/dA
    carries a factor B = 0)."""
    g = load_generator(TINY_RANDOM, "float32")
    x_t, t, text = _inputs(g)
    with torch.no_grad():
        base = g.velocity(x_t, t, text)
    add_lora(g.transformer, rank=4, alpha=8, targets=WAN_LORA_TARGETS)
    with torch.no_grad():
        assert torch.equal(g.velocity(x_t, t, text), base)
    trainable = {n for n, p in g.transformer.named_parameters() if p.requires_grad}
    assert len(trainable) == 32 and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert {n.split(".")[2] + "." + n.split(".")[3] for n in trainable if ".attn" in n} >= {"attn1.to_q", "attn2.to_v"}
    g.velocity(x_t, t, text).pow(2).mean().backward()
    for name, p in g.transformer.named_parameters():
        if name in trainable:
            assert p.grad is not None
            assert (p.grad.abs().sum() > 0) == ("lora_B" in name), name
        else:
            assert p.grad is None, name
    assert len(lora_state(g.transformer)) == 32


def test_adapters_disabled_gives_the_base_model():
    """With lora_B perturbed the policy differs from the base; inside adapters_disabled the output equals the base
    output exactly (the Flow-DPO reference, docs/numerics.md, Flow-DPO), and the adapter is back on afterwards."""
    g = load_generator(TINY_RANDOM, "float32")
    x_t, t, text = _inputs(g)
    with torch.no_grad():
        base = g.velocity(x_t, t, text)
    add_lora(g.transformer, rank=4, alpha=8, targets=WAN_LORA_TARGETS)
    _perturb_lora_b(g.transformer)
    with torch.no_grad():
        policy = g.velocity(x_t, t, text)
        with adapters_disabled(g.transformer):
            reference = g.velocity(x_t, t, text)
        again = g.velocity(x_t, t, text)
    assert (policy - base).abs().max() > 1e-2
    assert torch.equal(reference, base)
    assert torch.equal(again, policy)


def test_save_lora_loads_and_fuses_in_wan_pipeline(tmp_path):
    """save_lora -> WanPipeline.load_lora_weights on a fresh tiny-random (same seed, same base weights) reproduces
    the live adapter's velocity, alpha / r = 2 included (from the saved metadata); fuse_lora too (1e-5)."""
    g = load_generator(TINY_RANDOM, "float32")
    add_lora(g.transformer, rank=4, alpha=8, targets=WAN_LORA_TARGETS)
    _perturb_lora_b(g.transformer, seed=1)
    x_t, t, text = _inputs(g)
    with torch.no_grad():
        live = g.velocity(x_t, t, text)
        with adapters_disabled(g.transformer):
            base = g.velocity(x_t, t, text)
    assert (live - base).abs().max() > 1e-2
    file = save_lora(g.transformer, tmp_path)
    assert file == tmp_path / "pytorch_lora_weights.safetensors" and file.is_file()

    fresh = load_generator(TINY_RANDOM, "float32")
    pipe = _pipe(fresh)
    pipe.load_lora_weights(str(tmp_path))
    with torch.no_grad():
        loaded = fresh.velocity(x_t, t, text)
    torch.testing.assert_close(loaded, live, rtol=0, atol=1e-5)
    pipe.fuse_lora()
    with torch.no_grad():
        fused = fresh.velocity(x_t, t, text)
    torch.testing.assert_close(fused, live, rtol=0, atol=1e-5)

    # load_lora(fuse=True) fuses and unloads: the LoRA layers are gone, the merged weights stay
    merged = load_lora(load_generator(TINY_RANDOM, "float32"), file, fuse=True)
    assert not any("lora_" in n for n, _ in merged.transformer.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged.velocity(x_t, t, text), live, rtol=0, atol=1e-5)


def test_save_pipeline_round_trip(tmp_path, gen):
    """save_pipeline -> load_generator(folder): a WanPipeline folder, family Wan, same text length, identical
    text embeddings and velocity."""
    folder = save_pipeline(gen, tmp_path / "pipe")
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "WanPipeline"
    assert family_of(str(folder)) is WAN
    back = load_generator(str(folder), "float32")
    assert back.text_max_length == gen.text_max_length
    assert torch.equal(back.pad_text(back.encode_prompts(PROMPTS)), gen.pad_text(gen.encode_prompts(PROMPTS)))
    x_t, t, text = _inputs(gen)
    with torch.no_grad():
        assert torch.equal(back.velocity(x_t, t, text), gen.velocity(x_t, t, text))


# -- sampling -----------------------------------------------------------------------------------------------

def test_sample_one_step_is_noise_minus_the_cfg_velocity(gen):
    """steps = 1: times (1, 0), x = noise + (0 - 1) v with v = v_neg + 5 (v_cond - v_neg) at t = 1 on
    noise = randn(LATENT) from manual_seed(seed)."""
    text = gen.pad_text(gen.encode_prompts(PROMPTS[:1]))
    negative = gen.pad_text(gen.encode_prompts([""]))
    x = gen.sample(text, [7], LATENT, steps=1, guidance_scale=5.0, negative_text=negative)
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(7)).unsqueeze(0)
    with torch.no_grad():
        v_cond = gen.velocity(noise, torch.ones(1), text)
        v_neg = gen.velocity(noise, torch.ones(1), negative)
    torch.testing.assert_close(x, noise - (v_neg + 5.0 * (v_cond - v_neg)), rtol=0, atol=1e-5)


def test_sample_is_deterministic_and_independent_of_the_batch(gen):
    """Same seeds -> identical latents; seeds [1, 2] row 1 equals seed [2] alone (1e-5), and rows with different
    seeds differ. The hook sees every step's (x, t, v) with t from 1 down."""
    text = gen.pad_text(gen.encode_prompts(PROMPTS[:2]))
    negative = gen.pad_text(gen.encode_prompts(["", ""]))
    seen = []

    def hook(x, t, v):
        seen.append(t)
        return v

    a = gen.sample(text, [1, 2], LATENT, steps=3, negative_text=negative, velocity_hook=hook)
    b = gen.sample(text, [1, 2], LATENT, steps=3, negative_text=negative)
    alone = gen.sample(text[1:], [2], LATENT, steps=3, negative_text=negative[1:])
    assert a.shape == (2, *LATENT) and a.dtype == torch.float32
    assert torch.equal(a, b)
    torch.testing.assert_close(a[1:], alone, rtol=0, atol=1e-5)
    assert (a[0] - a[1]).abs().max() > 1e-2
    assert seen[0] == 1.0 and len(seen) == 3 and seen == sorted(seen, reverse=True)


# -- families -----------------------------------------------------------------------------------------------

def test_family_of_refuses_models_that_are_not_rectified_flow(tmp_path):
    """A folder whose model_index.json names CogVideoXPipeline is refused with the reason; an unknown pipeline
    and a folder without model_index.json are refused too; a CogVideoX hub id is refused by name (no download)."""
    folder = tmp_path / "cog"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    with pytest.raises(ValueError, match="CogVideoX") as err:
        family_of(str(folder))
    assert "rectified flow" in str(err.value) or "rectified-flow" in str(err.value)
    with pytest.raises(ValueError, match="CogVideoX"):
        load_generator(str(folder), "float32")
    with pytest.raises(ValueError, match="CogVideoX"):
        family_of("THUDM/CogVideoX-2b")
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FancyVideoPipeline"}))
    with pytest.raises(ValueError, match="FancyVideoPipeline is not supported; supported: WanPipeline"):
        family_of(str(other))
    with pytest.raises(ValueError, match="no model_index.json"):
        family_of(str(tmp_path))
    assert family_of(TINY_RANDOM) is WAN


def test_float16_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="float16: Wan does not produce valid videos in float16.*bfloat16"):
        load_generator(TINY_RANDOM, dtype="float16")


def test_wan_check_frames():
    """(F - 1) % 4 == 0: 1, 9 and 81 pass; 10 -> nearest 4 k + 1 with k = round(9/4) = 2 -> 9; 12 -> round(11/4)
    = 3 -> 13; 0 -> 1. 81 x 480 x 832 -> latents (16, 21, 60, 104) (docs/numerics.md, Flow conventions)."""
    assert WAN.check_frames(1) is None and WAN.check_frames(9) is None and WAN.check_frames(81) is None
    assert WAN.check_frames(10) == "Wan needs (num_frames - 1) % 4 == 0, got 10; use 9"
    assert WAN.check_frames(12).endswith("got 12; use 13")
    assert WAN.check_frames(0).endswith("got 0; use 1")
    assert WAN.latent_shape(81, 480, 832) == (16, 21, 60, 104)


def test_wan_check_lora_targets():
    """Short names, block-relative and full block paths are accepted; unknown modules are named with the list of
    valid ones."""
    assert WAN.check_lora_targets(WAN_LORA_TARGETS) is None
    assert WAN.check_lora_targets(["to_q", "to_out.0", "blocks.1.attn2.to_k", "ffn.net.0.proj"]) is None
    msg = WAN.check_lora_targets(["to_q", "to_x", "norm1"])
    assert msg.startswith("Wan has no module to_x, norm1; LoRA can target attn1.to_q, attn1.to_k")
    assert "to_q," not in msg.split(";")[0]


def test_bfloat16_cast_keeps_fp32_tensors_unrounded():
    """cast_module never sends the float32-kept tensors (time embedder, norms, rope, scale_shift_table) through bf16."""
    from videoalign.gen.generator import cast_module
    from videoalign.gen.tiny import tiny_random_components

    transformer = tiny_random_components(0)["transformer"]
    before = {n: t.clone() for n, t in [*transformer.named_parameters(), *transformer.named_buffers()]}
    cast_module(transformer, torch.bfloat16)
    kept = [(n, t) for n, t in [*transformer.named_parameters(), *transformer.named_buffers()]
            if t.dtype == torch.float32]
    assert any("scale_shift_table" in n for n, _ in kept) and any("time_embedder" in n for n, _ in kept)
    for name, tensor in kept:
        assert torch.equal(tensor, before[name]), name


def test_load_lora_refuses_a_lora_for_another_model(tmp_path):
    """diffusers only warns about LoRA keys for modules the model lacks; load_lora fails with the module named."""
    from safetensors.torch import save_file

    from videoalign.gen.lora import check_lora_file

    gen = load_generator(TINY_RANDOM, "float32")
    missing = tmp_path / "missing.safetensors"
    save_file({"transformer.blocks.9.attn1.to_q.lora_A.weight": torch.zeros(2, 32),
               "transformer.blocks.9.attn1.to_q.lora_B.weight": torch.zeros(32, 2)}, str(missing))
    with pytest.raises(ValueError, match=r"adapts blocks\.9\.attn1\.to_q with 32 in features, the model has no such"):
        load_lora(gen, missing)
    wide = tmp_path / "wide"
    wide.mkdir()
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 64),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(64, 2)},
              str(wide / "pytorch_lora_weights.safetensors"))
    with pytest.raises(ValueError, match="with 64 in features, the model has 32 in features"):
        check_lora_file(gen.transformer, wide)
    assert not [n for n, _ in gen.transformer.named_parameters() if "lora_" in n]  # nothing was loaded
