"""Tests for the VideoReward model, its loaders and writers (docs/numerics.md, Positions and Reward head and scores, Checkpoint layouts).

The parity test scores the six shared clips with the tiny reference-layout checkpoint in float32 and compares
against what the reference implementation (transformers 4.45.2) wrote. Everything else runs on the seeded
`tiny-random` model and a synthetic two-frame video, so it needs no network and no shared data.

LoRA arithmetic (docs/numerics.md, Checkpoint layouts/8.3, r = 64, alpha = 128): a saved LoRA pair (A, B) must load back as
W + (alpha / r) * B @ A = W + 2 * B @ A.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil

import pytest
import torch

from videoalign.reward.inputs import RewardInputBuilder, fill_template, load_template
from videoalign.reward.layouts import (
    DEFAULT_LORA,
    CheckpointError,
    find_step_dir,
    lora_targets,
    remap_reference_key,
    save_reference,
    to_reference_key,
)
from videoalign.reward.model import (
    RewardConfig,
    VideoRewardModel,
    build_tiny_random,
    tiny_random_tokenizer,
)
from videoalign.reward.videoreward import PreparedVideo, VideoReward
from videoalign.reward.vision import preprocess_frames

DIMS = ("VQ", "MQ", "TA")
PROMPTS = ["a red fox runs {fast} through snow", "a quiet harbour at dawn, boats rocking on small waves"]
LLM_PROJ = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
]


# ---- helpers -------------------------------------------------------------------------------------


def raw_scores(model, tokenizer, pixels, prompts) -> torch.Tensor:
    """Raw (B, 3) rewards of `prompts`, all with the same video, through the package's own input builder."""
    builder = RewardInputBuilder(tokenizer)
    tokens = [builder.tokenize(p, pixels.num_tokens) for p in prompts]
    batch = builder.collate(tokens, [pixels] * len(prompts))
    model.eval()
    with torch.inference_mode():
        return model(**batch).float()


class HiddenRecorder:
    """Records the backbone's final-norm hidden states (B, L, H) of every forward while active."""

    def __init__(self, model: VideoRewardModel):
        self.model = model
        self.outputs: list[torch.Tensor] = []

    def __enter__(self):
        def hook(_module, _args, output):
            self.outputs.append(output.last_hidden_state.detach().clone())

        self.handle = self.model.model.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def save_base(backbone, tokenizer, out_dir):
    """Write `backbone` as a plain Qwen2VLForConditionalGeneration folder (as `model_name_or_path`)."""
    from transformers import Qwen2VLForConditionalGeneration

    full = Qwen2VLForConditionalGeneration(copy.deepcopy(backbone.config))
    full.model.load_state_dict(backbone.state_dict(), strict=True)
    full.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def merged_copy(model: VideoRewardModel, lora_state: dict, scale: float) -> VideoRewardModel:
    """The model with each LoRA delta merged by hand: W + scale * B @ A."""
    merged = copy.deepcopy(model)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for name, (a, b) in lora_state.items():
            modules[name].weight += scale * (b @ a)
    return merged


class Pwned:
    """A pickle payload: loading it with full unpickling would call print("pwned")."""

    def __reduce__(self):
        return (print, ("pwned",))


class Opaque:
    """A plain custom object: not something a weights-only unpickler may build."""

    def __init__(self):
        self.weights = torch.zeros(2)


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer, config) of the seeded tiny-random VideoReward, float32. Do not mutate."""
    return build_tiny_random()


@pytest.fixture(scope="module")
def pixels():
    """A synthetic two-frame video, preprocessed (upscaled to min_pixels: 128 video tokens)."""
    g = torch.Generator().manual_seed(1234)
    frames = torch.randint(0, 256, (2, 3, 48, 80), generator=g, dtype=torch.uint8)
    return preprocess_frames(frames)


@pytest.fixture(scope="module")
def tiny_base_dir(tmp_path_factory):
    """The tiny-random backbone saved as a base Qwen2-VL folder with a fresh (reward-token-free) tokenizer,
    as `model_name_or_path` names it in a reference checkpoint."""
    model, _, _ = build_tiny_random()
    return save_base(model.model, tiny_random_tokenizer(), tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="module")
def lora_case(tiny):
    """A tiny model whose visual merger, reward-token embeddings and rm_head differ from the base (so the
    non-LoRA tensors must really be read from the checkpoint), plus seeded non-zero LoRA factors."""
    model, tokenizer, _ = tiny
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        merger = model.model.visual.merger.mlp[2].weight
        merger += 0.05 * torch.randn(merger.shape, generator=g)
        embed = model.model.get_input_embeddings().weight
        for tid in tokenizer.convert_tokens_to_ids([f"<|{d}_reward|>" for d in DIMS]):
            embed[tid] = torch.randn(embed.shape[1], generator=g)
        model.rm_head.weight.copy_(torch.randn(model.rm_head.weight.shape, generator=g))
    modules = dict(model.named_modules())
    r = DEFAULT_LORA["r"]
    lora_state = {}
    for layer in range(2):
        for proj in LLM_PROJ:
            name = f"model.language_model.layers.{layer}.{proj}"
            out_f, in_f = modules[name].weight.shape
            lora_state[name] = (
                0.05 * torch.randn(r, in_f, generator=g),
                0.05 * torch.randn(out_f, r, generator=g),
            )
    return model, lora_state


@pytest.fixture(scope="module")
def parity_dir(shared_data):
    return shared_data / "videoreward" / "parity"


@pytest.fixture(scope="module")
def reference(parity_dir):
    return json.loads((parity_dir / "reference_scores_full_fp32.json").read_text())["results"]


@pytest.fixture(scope="module")
def parity_rm(parity_dir):
    return VideoReward.from_pretrained(
        str(parity_dir / "tiny_videoreward_full"), dtype="float32", device="cpu"
    )


@pytest.fixture(scope="module")
def parity_run(parity_rm, reference, shared_data):
    """Score all six clips in ONE call (batch of 6, as the reference did), decoding each clip once.

    Records the PreparedVideo of each clip (by wrapping the instance's `prepare`; the scoring path itself is
    unchanged) and the backbone's hidden states, so later tests reuse the decoded pixels.
    """
    videos = [str(shared_data / "videoalign_examples" / "videos" / r["video"]) for r in reference]
    prompts = [r["prompt"] for r in reference]
    prepared: dict[str, PreparedVideo] = {}
    original = parity_rm.prepare

    def recording_prepare(path, prompt, *args, **kwargs):
        result = original(path, prompt, *args, **kwargs)
        prepared[str(path)] = result
        return result

    parity_rm.prepare = recording_prepare
    try:
        with HiddenRecorder(parity_rm.model) as rec:
            records = parity_rm.score(videos, prompts, batch_size=6, num_workers=2)
    finally:
        del parity_rm.prepare
    return {
        "records": records,
        "prepared": [prepared[v] for v in videos],
        "hidden": rec.outputs,
        "videos": videos,
        "prompts": prompts,
    }


# ---- parity with the reference (docs/numerics.md, Positions and Reward head and scores) -----------------------------


def test_parity_scores_match_reference(parity_run, reference):
    """Raw and normalised VQ/MQ/TA/Overall of all six clips within 1e-4 of the reference (fp32, one batch)."""
    records = parity_run["records"]
    assert len(records) == len(reference) == 6
    assert len(parity_run["hidden"]) == 1, "all six clips must go through the model in one forward"
    for rec, ref in zip(records, reference):
        assert "error" not in rec, rec.get("error")
        assert rec["video"].endswith(ref["video"])
        assert rec["normalized"] is True
        for key in (*DIMS, "Overall"):
            assert rec["raw"][key] == pytest.approx(ref["raw"][key], abs=1e-4), (ref["video"], "raw", key)
            assert rec[key] == pytest.approx(ref["normalized"][key], abs=1e-4), (ref["video"], "norm", key)
        assert rec["grid_thw"] == ref["video_grid_thw"]
        assert rec["num_frames"] == len(ref["frames"]["indices"])


def test_parity_input_ids_and_reward_positions(parity_rm, reference):
    """RewardInputBuilder.tokenize reproduces the reference's input_ids and reward-token positions exactly.

    The number of video tokens comes from the reference's own grid: N = t*h*w/4 (docs/numerics.md, Prompt and tokens).
    """
    builder = RewardInputBuilder(parity_rm.tokenizer)
    for ref in reference:
        t, h, w = ref["video_grid_thw"]
        tokens = builder.tokenize(ref["prompt"], t * h * w // 4)
        assert tokens.input_ids == ref["input_ids"], ref["video"]
        assert len(tokens.input_ids) == ref["num_tokens"]
        assert tokens.reward_positions == ref["special_token_positions"], ref["video"]


def test_parity_prepared_positions_and_hidden_states(parity_run, reference):
    """The prepared inputs of the scoring run carry the reference's positions, and the final-norm hidden
    states at the three reward tokens match the reference's within 1e-4."""
    (hidden,) = parity_run["hidden"]
    for row, (prep, ref) in enumerate(zip(parity_run["prepared"], reference)):
        assert prep.tokens.reward_positions == ref["special_token_positions"]
        assert prep.tokens.input_ids == ref["input_ids"]
        got = hidden[row, prep.tokens.reward_positions]  # (3, H)
        want = torch.tensor(ref["hidden_at_special_tokens"], dtype=torch.float32)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


# ---- normalisation (docs/numerics.md, Reward head and scores) -----------------------------------------------------------------


def test_normalisation_is_z_score_and_overall_is_sum(parity_run, parity_dir):
    """norm_k = (raw_k - mean_k)/std_k with model_config.json's inference_config; Overall = sum of the
    z-scores (not their mean: the two differ by a factor 3, far more than 1e-3 here)."""
    inference = json.loads((parity_dir / "tiny_videoreward_full" / "model_config.json").read_text())[
        "inference_config"
    ]
    for rec in parity_run["records"]:
        z = {d: (rec["raw"][d] - inference[f"{d}_mean"]) / inference[f"{d}_std"] for d in DIMS}
        for d in DIMS:
            assert rec[d] == pytest.approx(z[d], abs=1e-12)
        assert rec["Overall"] == pytest.approx(sum(z.values()), abs=1e-12)
        assert abs(rec["Overall"] - sum(z.values()) / 3) > 1e-3
        assert rec["raw"]["Overall"] == pytest.approx(sum(rec["raw"][d] for d in DIMS), abs=1e-9)


def test_raw_flag_reports_raw_values_at_top_level(parity_rm, parity_run):
    prep = parity_run["prepared"][0]
    raw = torch.tensor([parity_run["records"][0]["raw"][d] for d in DIMS])
    rec = parity_rm.to_record(prep, raw, raw=True)
    assert rec["normalized"] is False
    for d in DIMS:
        assert rec[d] == pytest.approx(float(raw[DIMS.index(d)]), abs=0)
        assert rec[d] == rec["raw"][d]
    assert rec["Overall"] == pytest.approx(float(raw.double().sum()), abs=1e-9)
    # the same scores without raw=True are z-scores, so the flag really switches something
    assert parity_rm.to_record(prep, raw)["VQ"] != rec["VQ"]


def test_uncalibrated_checkpoint_reports_raw(tiny):
    """tiny-random has no normalisation statistics: the top level is raw and normalized is False."""
    model, tokenizer, config = tiny
    assert config.normalization is None
    rm = VideoReward(copy.deepcopy(model), tokenizer, config)
    prep = PreparedVideo(pixels=None, tokens=None, num_frames=4, fps=2.0, grid_thw=(2, 8, 8))
    rec = rm.to_record(prep, torch.tensor([0.5, -1.25, 2.0]))
    assert rec["normalized"] is False
    assert (rec["VQ"], rec["MQ"], rec["TA"]) == (0.5, -1.25, 2.0)
    assert rec["Overall"] == pytest.approx(1.25)
    assert rec["raw"] == {"VQ": 0.5, "MQ": -1.25, "TA": 2.0, "Overall": pytest.approx(1.25)}
    assert (rec["num_frames"], rec["fps"], rec["grid_thw"]) == (4, 2.0, [2, 8, 8])


# ---- reference layouts: save and reload (docs/numerics.md, Checkpoint layouts) --------------------------------------


@pytest.fixture(scope="module")
def lora_expected(lora_case, tiny, pixels):
    """Scores of the in-memory model with its LoRA deltas merged by hand, and of the model without them."""
    model, lora_state = lora_case
    _, tokenizer, _ = tiny
    scale = DEFAULT_LORA["alpha"] / DEFAULT_LORA["r"]
    assert scale == 2.0
    merged = raw_scores(merged_copy(model, lora_state, scale), tokenizer, pixels, PROMPTS)
    unmerged = raw_scores(model, tokenizer, pixels, PROMPTS)
    # The deltas must matter, or the round trip below could not tell a dropped LoRA from a loaded one.
    assert (merged - unmerged).abs().max() > 1e-3
    return merged


def test_lora_targets_are_the_llm_projections(lora_case):
    """docs/numerics.md, Reward training recipe: q, k, v, o, gate, up, down of every decoder layer; nothing in visual/embed/heads."""
    model, lora_state = lora_case
    assert sorted(lora_targets(model, DEFAULT_LORA)) == sorted(lora_state)


@pytest.mark.parametrize("layout", ["full", "lora"])
def test_reference_layout_round_trip_with_lora(
    layout, lora_case, lora_expected, tiny, pixels, tiny_base_dir, tmp_path
):
    """Saving with non-zero LoRA factors and loading the folder gives the merged model's raw scores (1e-5).

    The `lora` layout takes the LLM base weights from `model_name_or_path`, so the config points at the saved
    tiny base; the visual merger, reward-token rows and rm_head differ from that base and must come from the
    checkpoint's non_lora_state_dict.pth.
    """
    model, lora_state = lora_case
    _, tokenizer, config = tiny
    assert config.lora is None  # so save_reference uses DEFAULT_LORA (r 64, alpha 128)
    config = dataclasses.replace(config, base_model=str(tiny_base_dir), note=None)
    step_dir = save_reference(
        model, tokenizer, config, tmp_path / "ckpt", layout=layout, step=5, lora_state=lora_state
    )
    assert step_dir == tmp_path / "ckpt" / "checkpoint-5"
    if layout == "full":
        assert (step_dir / "model.pth").is_file()
    else:
        assert (step_dir / "adapter_model.safetensors").is_file()
        assert (step_dir / "non_lora_state_dict.pth").is_file()
        assert not (step_dir / "model.pth").exists()
    loaded = VideoReward.from_pretrained(str(tmp_path / "ckpt"), dtype="float32", device="cpu")
    assert loaded.config.lora["r"] == 64 and loaded.config.lora["alpha"] == 128
    got = raw_scores(loaded.model, loaded.tokenizer, pixels, PROMPTS)
    torch.testing.assert_close(got, lora_expected, atol=1e-5, rtol=0)


def test_full_layout_writes_transformers_445_keys(lora_case, tiny, tmp_path):
    """model.pth holds the PEFT-wrapped state dict in 4.45 names (docs/numerics.md, Checkpoint layouts), never the 5.x names."""
    model, lora_state = lora_case
    _, tokenizer, config = tiny
    step_dir = save_reference(
        model, tokenizer, config, tmp_path, layout="full", step=1, lora_state=lora_state
    )
    state = torch.load(step_dir / "model.pth", weights_only=True)
    keys = set(state)
    assert "base_model.model.lm_head.weight" in keys
    assert "base_model.model.rm_head.weight" in keys
    assert "base_model.model.model.embed_tokens.weight" in keys
    assert "base_model.model.model.norm.weight" in keys
    assert any(k.startswith("base_model.model.visual.") for k in keys)
    assert any(k.startswith("base_model.model.model.layers.") for k in keys)
    assert not any("language_model" in k or k.startswith("base_model.model.model.visual.") for k in keys)
    # 26 tensors per layer (docs/numerics.md, Checkpoint layouts): 7 base weights + 3 q/k/v biases + 14 LoRA + 2 norms
    for layer in range(2):
        assert sum(k.startswith(f"base_model.model.model.layers.{layer}.") for k in keys) == 26
    q = "base_model.model.model.layers.0.self_attn.q_proj"
    assert {
        f"{q}.base_layer.weight",
        f"{q}.base_layer.bias",
        f"{q}.lora_A.default.weight",
        f"{q}.lora_B.default.weight",
    } <= keys
    a, b = lora_state["model.language_model.layers.0.self_attn.q_proj"]
    assert torch.equal(state[f"{q}.lora_A.default.weight"], a)
    assert torch.equal(state[f"{q}.lora_B.default.weight"], b)
    assert torch.equal(
        state["base_model.model.lm_head.weight"], state["base_model.model.model.embed_tokens.weight"]
    )
    config_json = json.loads((tmp_path / "model_config.json").read_text())
    assert config_json["peft_lora_config"]["lora_r"] == 64
    assert config_json["model_config"]["output_dim"] == 1


def test_lora_layout_writes_adapter_and_non_lora_files(lora_case, tiny, tmp_path):
    """train.sh layout (docs/numerics.md, Checkpoint layouts): adapter keys without `.default`; non-LoRA = visual, embed, rm_head."""
    from safetensors.torch import load_file

    model, lora_state = lora_case
    _, tokenizer, config = tiny
    step_dir = save_reference(
        model, tokenizer, config, tmp_path, layout="lora", step=0, lora_state=lora_state
    )
    adapter = load_file(str(step_dir / "adapter_model.safetensors"))
    assert len(adapter) == 2 * len(lora_state)
    assert all(
        k.startswith("base_model.model.model.layers.") and k.endswith((".lora_A.weight", ".lora_B.weight"))
        for k in adapter
    )
    non_lora = torch.load(step_dir / "non_lora_state_dict.pth", weights_only=True)
    assert "base_model.model.rm_head.weight" in non_lora
    assert "base_model.model.model.embed_tokens.weight" in non_lora
    assert any(k.startswith("base_model.model.visual.merger.") for k in non_lora)
    assert not any(".layers." in k and "visual" not in k for k in non_lora)
    adapter_config = json.loads((step_dir / "adapter_config.json").read_text())
    assert adapter_config["r"] == 64 and adapter_config["lora_alpha"] == 128
    assert sorted(adapter_config["target_modules"]) == sorted(p.split(".")[1] for p in LLM_PROJ)


def test_parity_checkpoint_resaved_in_full_layout(parity_rm, parity_run, parity_dir, tmp_path):
    """Re-saving the loaded parity model writes exactly the released file's key set and shapes, and loading it
    gives the same scores (the merged weights go into base_layer with zero LoRA B)."""
    original = torch.load(
        parity_dir / "tiny_videoreward_full" / "checkpoint-2" / "model.pth", weights_only=True
    )
    save_reference(parity_rm.model, parity_rm.tokenizer, parity_rm.config, tmp_path, layout="full", step=2)
    written = torch.load(tmp_path / "checkpoint-2" / "model.pth", weights_only=True)
    assert set(written) == set(original)
    assert {k: tuple(v.shape) for k, v in written.items()} == {k: tuple(v.shape) for k, v in original.items()}
    reloaded = VideoReward.from_pretrained(str(tmp_path), dtype="float32", device="cpu")
    assert reloaded.config.normalization == parity_rm.config.normalization
    prep = parity_run["prepared"][5]  # the smallest clip
    torch.testing.assert_close(
        reloaded.score_prepared([prep]), parity_rm.score_prepared([prep]), atol=1e-5, rtol=0
    )


def test_merged_model_cannot_be_exported_to_the_lora_layout_without_its_factors(parity_rm, tmp_path):
    """The parity checkpoint has non-zero LoRA B, merged into q/k/v/... on load. The lora layout stores no
    base_layer weights, so exporting the merged model without lora_state would silently drop the deltas
    (q_proj would move by up to 0.23): it must be refused, while the full layout keeps the weights."""
    with pytest.raises(ValueError, match="lora_state"):
        save_reference(parity_rm.model, parity_rm.tokenizer, parity_rm.config, tmp_path, layout="lora", step=2)
    save_reference(parity_rm.model, parity_rm.tokenizer, parity_rm.config, tmp_path, layout="full", step=2)
    reloaded = VideoReward.from_pretrained(str(tmp_path), dtype="float32", device="cpu")
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(
        reloaded.model.state_dict()[name], parity_rm.model.state_dict()[name], atol=1e-6, rtol=0
    )


# ---- our own format ------------------------------------------------------------------------------


def test_native_round_trip_tiny_random(tiny, pixels, tmp_path):
    model, tokenizer, config = tiny
    rm = VideoReward(copy.deepcopy(model), tokenizer, config, source="tiny-random")
    out = rm.save_pretrained(tmp_path / "native")
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    loaded = VideoReward.from_pretrained(str(out), dtype="float32", device="cpu")
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(config)
    assert loaded.tokenizer.convert_tokens_to_ids(
        ["<|VQ_reward|>", "<|TA_reward|>"]
    ) == tokenizer.convert_tokens_to_ids(["<|VQ_reward|>", "<|TA_reward|>"])
    assert torch.equal(
        raw_scores(loaded.model, loaded.tokenizer, pixels, PROMPTS),
        raw_scores(rm.model, tokenizer, pixels, PROMPTS),
    )


def test_native_round_trip_parity_model(parity_rm, parity_run, tmp_path):
    """Normalisation stats and LoRA settings survive our format; scores are identical."""
    out = parity_rm.save_pretrained(tmp_path / "native")
    loaded = VideoReward.from_pretrained(str(out), dtype="float32", device="cpu")
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(parity_rm.config)
    prep = parity_run["prepared"][5]
    a, b = loaded.score_prepared([prep]), parity_rm.score_prepared([prep])
    assert torch.equal(a, b)
    assert loaded.to_record(prep, a[0]) == parity_rm.to_record(prep, b[0])


def test_native_strict_load_names_missing_key(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    model, tokenizer, config = tiny
    out = VideoReward(copy.deepcopy(model), tokenizer, config).save_pretrained(tmp_path)
    state = load_file(str(out / "model.safetensors"))
    del state["rm_head.weight"]
    save_file(state, str(out / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing.*rm_head\.weight"):
        VideoReward.from_pretrained(str(out), dtype="float32", device="cpu")


# ---- strict loading of the reference layout (docs/numerics.md, Checkpoint layouts) ---------------------------------------


@pytest.fixture
def parity_copy(parity_dir, tmp_path):
    """A writable copy of the parity checkpoint root (the base stays in shared data): (root, state)."""
    src = parity_dir / "tiny_videoreward_full"
    root = tmp_path / "ckpt"
    (root / "checkpoint-2").mkdir(parents=True)
    shutil.copy(src / "model_config.json", root / "model_config.json")
    state = torch.load(src / "checkpoint-2" / "model.pth", weights_only=True)
    return root, state


def _load_copy(root, parity_dir):
    return VideoReward.from_pretrained(
        str(root), base_model=str(parity_dir / "tiny_qwen2vl_base"), dtype="float32", device="cpu"
    )


def test_parity_copy_loads_when_untouched(parity_copy, parity_dir, parity_rm):
    """Control for the strict-loading tests below: the unmodified copy loads to the same weights."""
    root, state = parity_copy
    torch.save(state, root / "checkpoint-2" / "model.pth")
    rm = _load_copy(root, parity_dir)
    mine, theirs = rm.model.state_dict(), parity_rm.model.state_dict()
    assert set(mine) == set(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize(
    "key, named",
    [
        (
            "base_model.model.model.layers.1.post_attention_layernorm.weight",
            "layers.1.post_attention_layernorm.weight",
        ),
        ("base_model.model.rm_head.weight", "rm_head.weight"),
        ("base_model.model.visual.merger.mlp.2.bias", "visual.merger.mlp.2.bias"),
        ("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight", "layers.0.self_attn.q_proj"),
        ("base_model.model.model.layers.0.mlp.up_proj.lora_B.default.weight", "layers.0.mlp.up_proj"),
    ],
)
def test_missing_key_is_an_error_naming_it(key, named, parity_copy, parity_dir):
    root, state = parity_copy
    del state[key]
    torch.save(state, root / "checkpoint-2" / "model.pth")
    with pytest.raises(ValueError) as err:  # CheckpointError is a ValueError
        _load_copy(root, parity_dir)
    assert named in str(err.value)


@pytest.mark.parametrize(
    "key",
    [
        "base_model.model.model.layers.0.self_attn.extra_proj.weight",
        "base_model.model.visual.blocks.7.norm1.weight",
        "optimizer_step",
    ],
)
def test_extra_key_is_an_error_naming_it(key, parity_copy, parity_dir):
    root, state = parity_copy
    state[key] = torch.zeros(4)
    torch.save(state, root / "checkpoint-2" / "model.pth")
    with pytest.raises(ValueError) as err:
        _load_copy(root, parity_dir)
    tail = key.removeprefix("base_model.model.model.").removeprefix("base_model.model.")
    assert tail in str(err.value)


def test_wrong_shape_is_an_error_naming_it(parity_copy, parity_dir):
    root, state = parity_copy
    state["base_model.model.rm_head.weight"] = torch.zeros(3, 64, dtype=torch.bfloat16)
    torch.save(state, root / "checkpoint-2" / "model.pth")
    with pytest.raises(ValueError, match=r"rm_head\.weight.*\(3, 64\)"):
        _load_copy(root, parity_dir)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda: {"base_model.model.rm_head.weight": Pwned()}, id="reduce-calls-print"),
        pytest.param(lambda: Pwned(), id="top-level-reduce"),
        pytest.param(lambda: Opaque(), id="custom-object"),
    ],
)
def test_pickled_code_is_refused(payload, parity_copy, parity_dir, capsys):
    """weights_only=True: a .pth whose unpickling would run code is refused before anything runs."""
    root, _ = parity_copy
    torch.save(payload(), root / "checkpoint-2" / "model.pth")
    with pytest.raises(CheckpointError, match="weights-only") as err:
        _load_copy(root, parity_dir)
    assert "model.pth" in str(err.value)
    assert "pwned" not in capsys.readouterr().out


def test_non_dict_pth_is_refused(parity_copy, parity_dir):
    root, state = parity_copy
    torch.save(list(state.values()), root / "checkpoint-2" / "model.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        _load_copy(root, parity_dir)


# ---- checkpoint-step selection (docs/numerics.md, Checkpoint layouts) ----------------------------------------------------


@pytest.fixture(scope="module")
def multi_step_root(tiny, tiny_base_dir, tmp_path_factory):
    """A reference root with checkpoint-1, -3 and -10, each with its own rm_head (row value = step)."""
    model, tokenizer, config = tiny
    config = dataclasses.replace(config, base_model=str(tiny_base_dir), note=None)
    root = tmp_path_factory.mktemp("steps")
    model = copy.deepcopy(model)
    for step in (1, 10, 3):
        with torch.no_grad():
            model.rm_head.weight.fill_(float(step))
        save_reference(model, tokenizer, config, root, layout="full", step=step)
    (root / "checkpoint-7-old").mkdir()  # not a step folder: ignored
    return root


def _step_of(rm: VideoReward) -> float:
    return float(rm.model.rm_head.weight.detach()[0, 0])


def test_largest_step_is_loaded_by_default(multi_step_root):
    """Numeric, not lexicographic: checkpoint-10 beats checkpoint-3."""
    assert find_step_dir(multi_step_root, None).name == "checkpoint-10"
    rm = VideoReward.from_pretrained(str(multi_step_root), dtype="float32", device="cpu")
    assert _step_of(rm) == 10.0


def test_checkpoint_step_picks_that_folder(multi_step_root):
    rm = VideoReward.from_pretrained(str(multi_step_root), checkpoint_step=3, dtype="float32", device="cpu")
    assert _step_of(rm) == 3.0
    rm = VideoReward.from_pretrained(str(multi_step_root / "checkpoint-1"), dtype="float32", device="cpu")
    assert _step_of(rm) == 1.0


def test_missing_step_lists_available_steps(multi_step_root):
    with pytest.raises(CheckpointError) as err:
        VideoReward.from_pretrained(str(multi_step_root), checkpoint_step=7, dtype="float32", device="cpu")
    message = str(err.value)
    assert "checkpoint-7" in message
    assert "1, 3, 10" in message


def test_root_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint-<step>"):
        find_step_dir(tmp_path, None)


# ---- key remap (docs/numerics.md, Checkpoint layouts) -------------------------------------------------------------------

KEY_PAIRS = [
    (
        "base_model.model.visual.patch_embed.proj.weight",
        "base_model.model.model.visual.patch_embed.proj.weight",
    ),
    (
        "base_model.model.visual.blocks.31.attn.qkv.bias",
        "base_model.model.model.visual.blocks.31.attn.qkv.bias",
    ),
    ("base_model.model.visual.merger.mlp.0.weight", "base_model.model.model.visual.merger.mlp.0.weight"),
    (
        "base_model.model.model.embed_tokens.weight",
        "base_model.model.model.language_model.embed_tokens.weight",
    ),
    (
        "base_model.model.model.layers.27.self_attn.q_proj.base_layer.weight",
        "base_model.model.model.language_model.layers.27.self_attn.q_proj.base_layer.weight",
    ),
    (
        "base_model.model.model.layers.0.self_attn.k_proj.base_layer.bias",
        "base_model.model.model.language_model.layers.0.self_attn.k_proj.base_layer.bias",
    ),
    (
        "base_model.model.model.layers.3.mlp.down_proj.lora_A.default.weight",
        "base_model.model.model.language_model.layers.3.mlp.down_proj.lora_A.default.weight",
    ),
    (
        "base_model.model.model.layers.3.mlp.gate_proj.lora_B.default.weight",
        "base_model.model.model.language_model.layers.3.mlp.gate_proj.lora_B.default.weight",
    ),
    (
        "base_model.model.model.layers.5.input_layernorm.weight",
        "base_model.model.model.language_model.layers.5.input_layernorm.weight",
    ),
    ("base_model.model.model.norm.weight", "base_model.model.model.language_model.norm.weight"),
    ("base_model.model.lm_head.weight", "base_model.model.lm_head.weight"),
    ("base_model.model.rm_head.weight", "base_model.model.rm_head.weight"),
]


@pytest.mark.parametrize("old, new", KEY_PAIRS)
def test_remap_reference_key_round_trip(old, new):
    assert remap_reference_key(old) == new
    assert to_reference_key(new) == old
    assert remap_reference_key(new) == new  # rule 2: already-5.x keys are left alone


def test_remap_round_trips_every_key_of_the_parity_file(parity_dir):
    state = torch.load(parity_dir / "tiny_videoreward_full" / "checkpoint-2" / "model.pth", weights_only=True)
    remapped = [remap_reference_key(k) for k in state]
    assert len(set(remapped)) == len(state)
    assert [to_reference_key(k) for k in remapped] == list(state)


# ---- tiny-random ---------------------------------------------------------------------------------


def test_tiny_random_is_deterministic_and_says_it_is_meaningless(tiny):
    model, tokenizer, config = tiny
    rng_before = torch.random.get_rng_state()
    again, tokenizer2, _ = build_tiny_random()
    assert torch.equal(torch.random.get_rng_state(), rng_before), "building must not disturb the global RNG"
    a, b = model.state_dict(), again.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert tokenizer2.get_vocab() == tokenizer.get_vocab()
    other, _, _ = build_tiny_random(seed=1)
    assert not torch.equal(other.rm_head.weight, model.rm_head.weight)
    assert "meaningless" in config.note
    assert config.normalization is None


def test_tiny_random_from_pretrained_warns(caplog):
    # The CLI's setup_logging stops propagation of the "videoalign" logger (its rich handler prints instead),
    # so listen on that logger itself: the result must not depend on which tests ran before.
    logger = logging.getLogger("videoalign")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="videoalign"):
            rm = VideoReward.from_pretrained("tiny-random", dtype="float32", device="cpu")
    finally:
        logger.removeHandler(caplog.handler)
    assert "meaningless" in rm.config.note
    assert any("meaningless" in r.getMessage() for r in caplog.records)


# ---- heads and config (docs/numerics.md, Positions) ------------------------------------------------------------


def test_output_dim_3_reads_the_diagonal(tiny, pixels):
    """output_dim = 3: r_k = W[k] . h_k (the diagonal of the (3, 3) logits), h_k final-norm hidden states."""
    model, tokenizer, _ = tiny
    head3 = VideoRewardModel(model.model, output_dim=3, num_dims=3)  # shares the (read-only) backbone
    with torch.no_grad():
        head3.rm_head.weight.copy_(torch.randn(3, 64, generator=torch.Generator().manual_seed(3)))
    builder = RewardInputBuilder(tokenizer)
    tokens = [builder.tokenize(p, pixels.num_tokens) for p in PROMPTS]
    with HiddenRecorder(head3) as rec:
        got = raw_scores(head3, tokenizer, pixels, PROMPTS)
    (hidden,) = rec.outputs
    w = head3.rm_head.weight.detach()
    for row, tok in enumerate(tokens):
        h = hidden[row, tok.reward_positions]  # (3, H)
        want = torch.stack([w[k] @ h[k] for k in range(3)])
        torch.testing.assert_close(got[row], want, atol=1e-6, rtol=1e-6)
        # not the shared-head reading with any single row of W
        assert not torch.allclose(got[row], h @ w[0], atol=1e-4)


def test_reward_config_rules():
    with pytest.raises(ValueError, match="output_dim=2"):
        RewardConfig(output_dim=2)
    assert RewardConfig(output_dim=3).output_dim == 3
    with pytest.raises(ValueError, match="exclusive"):
        RewardConfig(fps=2.0, num_frames=8)
    with pytest.raises(ValueError, match="MQ"):
        RewardConfig(
            normalization={
                "VQ": {"mean": 0, "std": 1},
                "MQ": {"mean": 0, "std": 0},
                "TA": {"mean": 0, "std": 1},
            }
        )


# ---- prompts (docs/numerics.md, Prompt and tokens) ----------------------------------------------------------------


@pytest.mark.parametrize("dim", DIMS)
def test_prompt_with_reward_token_is_rejected(dim, tiny):
    model, tokenizer, config = tiny
    token = f"<|{dim}_reward|>"
    builder = RewardInputBuilder(tokenizer)
    with pytest.raises(ValueError, match=rf"reserved token <\|{dim}_reward\|>"):
        builder.tokenize(f"a cat {token} on a mat", 4)
    # through the API: the item gets an error record (checked before any decoding) instead of a score
    rm = VideoReward(copy.deepcopy(model), tokenizer, config)
    (record,) = rm.score(["no_such_video.mp4"], [f"x {token}"], num_workers=0)
    assert "reserved token" in record["error"] and token in record["error"]
    assert "VQ" not in record


def test_braces_in_prompts_are_literal(tiny):
    """The reference fills with str.format, which inserts the prompt verbatim, braces and all."""
    _, tokenizer, _ = tiny
    template = load_template()
    for prompt in ["{}", "a {b} c", "{text_prompt}", "{0} and {{x}}", "}{", "  padded {x}  \n"]:
        filled = fill_template(template, prompt)
        assert filled == template.format(text_prompt=prompt)
        assert f"Textual prompt - {prompt}" in filled
    builder = RewardInputBuilder(tokenizer)
    prompt = " a {b} {text_prompt} c  "  # verbatim: neither braces nor surrounding spaces are touched
    tokens = builder.tokenize(prompt, 4)
    text = tokenizer.decode(tokens.input_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert f"Textual prompt - {prompt}\n" in text


def test_prompt_with_video_pad_token_cannot_add_video_slots(tiny):
    _, tokenizer, _ = tiny
    builder = RewardInputBuilder(tokenizer)
    try:
        tokens = builder.tokenize("a cat <|video_pad|> on a mat", 4)
    except ValueError:
        return  # rejected: fine
    assert tokens.input_ids.count(builder.video_pad_id) == 4


def test_qwen2_vl_2b_random_has_the_real_architecture():
    """qwen2-vl-2b-random (built on the meta device here) has Qwen2-VL-2B-Instruct's parameter count:
    2,208,985,600 with the 151936-row vocabulary, minus 276 rows x 1536 after the resize to 151660
    (= 2,208,561,664), plus the 1536-weight reward head = 2,208,563,200."""
    from videoalign.reward.model import (
        QWEN2_VL_2B_VOCAB,
        RewardConfig,
        add_reward_tokens,
        build_backbone,
        build_reward_model,
        qwen2_vl_2b_config,
        resize_vocab,
        tiny_random_tokenizer,
    )

    tokenizer = tiny_random_tokenizer()
    add_reward_tokens(tokenizer, ["VQ", "MQ", "TA"])
    with torch.device("meta"):
        model = build_reward_model(build_backbone(qwen2_vl_2b_config(tokenizer), torch.bfloat16), tokenizer,
                                   RewardConfig())
        resize_vocab(model.model, QWEN2_VL_2B_VOCAB)
    assert sum(p.numel() for p in model.parameters()) == 2_208_563_200
    assert len(model.model.language_model.layers) == 28 and len(model.model.visual.blocks) == 32
