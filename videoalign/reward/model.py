"""VideoReward: Qwen2-VL + one special token per dimension + a linear reward head (docs/numerics.md, Positions).

Owns the model (`VideoRewardModel`), its checkpoint metadata (`RewardConfig`), our own saved format
(`config.json` + `model.safetensors` + tokenizer files) and the seeded `tiny-random` model. The reference's
two checkpoint layouts are read and written by `reward_layouts.py`; `VideoReward.from_pretrained` picks the
right loader for a hub id, a local folder or `tiny-random`.

Forward: embed the ids, write the vision tower's merged tokens into the `<|video_pad|>` slots, run the text
decoder with plain 1-D positions `arange(L)` on all three M-RoPE axes (what the released model was trained
with: docs/numerics.md, Positions), read the final-norm hidden states at the reward tokens and apply `rm_head`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from videoalign.data import write_atomic
from videoalign.reward.inputs import DEFAULT_DIMS, reward_token

log = logging.getLogger(__name__)

NATIVE_FORMAT = "videoalign.videoreward"
NATIVE_WEIGHTS = "model.safetensors"
NATIVE_CONFIG = "config.json"
TINY_RANDOM = "tiny-random"
#: the Qwen2-VL-2B architecture (docs/numerics.md, Positions and Pixels and patches) with random weights and tiny-random's tokenizer: real-size
#: speed and memory figures without a download (`bench speed --device cuda`); its scores are meaningless
QWEN2_VL_2B_RANDOM = "qwen2-vl-2b-random"
RANDOM_MODELS = (TINY_RANDOM, QWEN2_VL_2B_RANDOM)
#: Qwen2-VL-2B's text embedding rows after the reward model's resize (docs/numerics.md, Prompt and tokens)
QWEN2_VL_2B_VOCAB = 151660
DEFAULT_MODEL = "KwaiVGI/VideoReward"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class RewardConfig:
    """Everything besides the weights that decides a checkpoint's scores."""

    #: reward dimensions, in head order; each gets the special token <|{dim}_reward|>
    dims: list[str] = field(default_factory=lambda: list(DEFAULT_DIMS))
    #: 1 = one linear head shared by all reward tokens (released); len(dims) = one row per dimension
    output_dim: int = 1
    #: frames sampled per second of source video (exclusive with num_frames)
    fps: float | None = 2.0
    #: fixed number of frames per video instead of fps sampling
    num_frames: int | None = None
    #: upper bound on h*w of the resized frames (released: 200704 = 448^2)
    max_pixels: int = 200704
    #: lower bound on h*w of the resized frames
    min_pixels: int = 128 * 28 * 28
    #: rubric template, byte-exact (see reward_inputs.TEMPLATES)
    template_type: str = "detailed_special"
    #: per-dimension {"mean": m, "std": s} for z-scoring raw outputs; None when uncalibrated
    normalization: dict[str, dict[str, float]] | None = None
    #: where the base Qwen2-VL came from (hub id or path); informational for our own format
    base_model: str | None = None
    #: LoRA settings of the reference layouts (r, alpha, exclusions), kept for --export-layout reference
    lora: dict | None = None
    #: human-readable warning shown with every score (e.g. for tiny-random)
    note: str | None = None

    def __post_init__(self):
        if self.output_dim not in (1, len(self.dims)):
            raise ValueError(
                f"output_dim={self.output_dim} is not supported: use 1 (shared head) or {len(self.dims)} (one per dim)"
            )
        if self.fps is not None and self.num_frames is not None:
            raise ValueError("fps and num_frames are exclusive: set one of them to null")
        if self.normalization is not None:
            for dim in self.dims:
                stats = self.normalization.get(dim)
                if not stats or float(stats.get("std", 0)) <= 0:
                    raise ValueError(f"normalization for {dim} needs a mean and a positive std")


class VideoRewardModel(nn.Module):
    """Qwen2VLModel (no lm_head: it is never used) + `rm_head` read at the reward tokens."""

    def __init__(self, backbone: nn.Module, output_dim: int, num_dims: int):
        super().__init__()
        self.model = backbone
        hidden = backbone.config.text_config.hidden_size
        self.rm_head = nn.Linear(hidden, output_dim, bias=False)
        nn.init.normal_(self.rm_head.weight, std=0.02)
        self.num_dims = num_dims

    def forward(self, input_ids, attention_mask, reward_positions, pixel_values_videos, video_grid_thw):
        """input_ids/attention_mask (B, L), reward_positions (B, D) -> raw rewards (B, D) float32."""
        batch, length = input_ids.shape
        # 1-D positions on all three M-RoPE axes, as the reference's 4.45 forward implicitly used: (3, B, L)
        position_ids = torch.arange(length, device=input_ids.device).view(1, 1, -1).expand(3, batch, -1)
        # No padding mask: padding is on the right and attention is causal, so no valid token can attend to a
        # pad. Valid positions are unchanged (bit-identical in tests) and SDPA runs its causal kernel instead of
        # materialising (B, 1, L, L) masks: 2-3x faster and far less memory. `attention_mask` stays in the
        # signature for callers that build it; the hidden states of pad positions are garbage and never read.
        del attention_mask
        hidden = self.model(
            input_ids=input_ids,
            attention_mask=None,
            position_ids=position_ids,
            pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw,
            use_cache=False,
        ).last_hidden_state  # (B, L, H), after the final RMSNorm
        rows = torch.arange(batch, device=hidden.device).unsqueeze(1)
        pooled = hidden[rows, reward_positions]  # (B, D, H)
        logits = self.rm_head(pooled.to(self.rm_head.weight.dtype))  # (B, D, output_dim)
        if logits.shape[-1] == 1:
            return logits.squeeze(-1).float()
        return torch.diagonal(logits, dim1=1, dim2=2).float()  # r_k = W[k] . h_k


def resize_vocab(backbone: nn.Module, num_tokens: int) -> None:
    """Resize the text embedding to `num_tokens` rows, keeping rows 0..n-1 (for Qwen2-VL-2B this *shrinks*
    151936 -> 151660, so the reward tokens start from pre-existing padding rows: docs/numerics.md, Prompt and tokens)."""
    old = backbone.get_input_embeddings()
    if old.num_embeddings == num_tokens:
        return
    new = nn.Embedding(num_tokens, old.embedding_dim, padding_idx=old.padding_idx, dtype=old.weight.dtype)
    keep = min(num_tokens, old.num_embeddings)
    with torch.no_grad():
        nn.init.normal_(new.weight, std=0.02)
        new.weight[:keep] = old.weight[:keep]
    backbone.set_input_embeddings(new)
    backbone.config.text_config.vocab_size = num_tokens


def add_reward_tokens(tokenizer, dims) -> list[int]:
    """Add <|dim_reward|> tokens as additional special tokens in dims order; return their ids."""
    tokens = [reward_token(d) for d in dims]
    have = tokenizer.get_vocab()
    new = [t for t in tokens if t not in have]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(tokens)


def build_backbone(qwen_config, dtype: torch.dtype, init: bool = True) -> nn.Module:
    """A Qwen2VLModel from a config. `init=False` skips weight init when every tensor is loaded next."""
    from transformers import Qwen2VLModel
    from transformers.initialization import no_init_weights

    qwen_config = _as_qwen_config(qwen_config)
    if init:
        return Qwen2VLModel._from_config(qwen_config, dtype=dtype, attn_implementation="sdpa")
    with no_init_weights():
        return Qwen2VLModel._from_config(qwen_config, dtype=dtype, attn_implementation="sdpa")


def load_base_backbone(base: str, dtype: torch.dtype) -> nn.Module:
    """Pretrained Qwen2-VL weights (hub id or folder), without the unused lm_head."""
    from transformers import Qwen2VLForConditionalGeneration

    full = Qwen2VLForConditionalGeneration.from_pretrained(base, dtype=dtype, attn_implementation="sdpa")
    return full.model


def _as_qwen_config(cfg):
    from transformers import Qwen2VLConfig

    if isinstance(cfg, dict):
        cfg = Qwen2VLConfig.from_dict(cfg)
    return cfg


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def tiny_random_tokenizer():
    """A small byte-level BPE (768 tokens) trained in-process on the rubric template, plus Qwen2-VL's special
    tokens. Training is deterministic and takes milliseconds; the rubric becomes ~1,100 tokens, close to the
    real Qwen2 tokenizer's length, so the tiny model sees realistic sequence lengths."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from videoalign.reward.inputs import fill_template, load_template

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=768, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    backend.train_from_iterator([fill_template(load_template(), "")], trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                "<|image_pad|>", "<|video_pad|>"]
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


def tiny_qwen_config(tokenizer) -> dict:
    """Config of a 2-layer, width-64 Qwen2-VL for offline smoke runs and tests."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "model_type": "qwen2_vl",
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "text_config": {
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": len(tokenizer), "rms_norm_eps": 1e-6,
            "max_position_embeddings": 32768, "tie_word_embeddings": True, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.pad_token_id, "eos_token_id": ids("<|im_end|>"),
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
        },
        "vision_config": {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 4},
        "video_token_id": ids("<|video_pad|>"), "image_token_id": ids("<|image_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"), "vision_end_token_id": ids("<|vision_end|>"),
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.pad_token_id, "eos_token_id": ids("<|im_end|>"),
    }


def qwen2_vl_2b_config(tokenizer) -> dict:
    """tiny_qwen_config's token ids with Qwen2-VL-2B-Instruct's sizes: LLM 28 x 1536 (12 / 2 heads, MLP 8960,
    mrope [16, 24, 24]), ViT 32 x 1280 (16 heads, MLP 5120) merging to 1536."""
    config = tiny_qwen_config(tokenizer)
    config["text_config"].update({
        "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
        "num_key_value_heads": 2, "vocab_size": 151936,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}})
    config["vision_config"] = {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4,
                               "in_chans": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    return config


def build_reward_model(backbone: nn.Module, tokenizer, config: RewardConfig) -> VideoRewardModel:
    """Attach the reward tokens and head to a backbone: add tokens, resize the vocab to the tokenizer."""
    add_reward_tokens(tokenizer, config.dims)
    resize_vocab(backbone, len(tokenizer))
    backbone.config.text_config.pad_token_id = tokenizer.pad_token_id
    model = VideoRewardModel(backbone, config.output_dim, len(config.dims))
    return model.to(next(backbone.parameters()).dtype)


def save_native(model: VideoRewardModel, tokenizer, config: RewardConfig, out_dir: str | Path) -> Path:
    """Our format: config.json (reward + Qwen2-VL config), model.safetensors (plain state dict), tokenizer."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = out_dir / (NATIVE_WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(out_dir / NATIVE_WEIGHTS)
    tokenizer.save_pretrained(out_dir)
    meta = {
        "format": NATIVE_FORMAT,
        "version": 1,
        "reward": dataclasses.asdict(config),
        "qwen2_vl": model.model.config.to_dict(),
    }
    write_atomic(out_dir / NATIVE_CONFIG, json.dumps(meta, indent=2) + "\n")
    return out_dir


def is_native(path: Path) -> bool:
    cfg = path / NATIVE_CONFIG
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == NATIVE_FORMAT
    except (ValueError, OSError):
        return False


def load_native(path: str | Path, dtype: torch.dtype):
    """Load our own format strictly. Returns (model, tokenizer, RewardConfig)."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads((path / NATIVE_CONFIG).read_text())
    config = RewardConfig(**meta["reward"])
    tokenizer = load_tokenizer(str(path))
    backbone = build_backbone(meta["qwen2_vl"], dtype, init=False)
    model = build_reward_model(backbone, tokenizer, config)
    load_strict(model, load_file(str(path / NATIVE_WEIGHTS)), source=str(path / NATIVE_WEIGHTS))
    return model, tokenizer, config


def load_strict(model: nn.Module, state: dict, source: str, tolerated: tuple[str, ...] = ()) -> None:
    """`load_state_dict(strict=True)` with an error that names every missing and unexpected key and shape."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith(tolerated))
    unexpected = sorted(k for k in state if k not in own and not k.endswith(tolerated))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''})")
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected ({', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''})"
            )
        if shapes:
            parts.append(f"{len(shapes)} with other shapes ({'; '.join(shapes[:4])})")
        raise ValueError(f"checkpoint {source} does not fit the model: {'; '.join(parts)}")
    with torch.no_grad():
        model.load_state_dict({k: state[k] for k in own}, strict=True)
    log.info("loaded %d/%d tensors from %s", len(own), len(own), source)


def build_tiny_random(seed: int = 0, dtype: torch.dtype = torch.float32, config: RewardConfig | None = None,
                      name: str = TINY_RANDOM):
    """A seeded, randomly initialised VideoReward. Its scores are meaningless: for offline smoke runs and as a
    from-scratch base in tests. `config` sets dims, head and sampling (default: the released layout).
    name: tiny-random (2 layers, width 64), or qwen2-vl-2b-random (the real architecture and embedding size, for
    speed and memory figures; tiny-random's tokenizer, whose rubric is about as long as the real one's)."""
    if name not in RANDOM_MODELS:
        raise ValueError(f"random model: expected one of {', '.join(RANDOM_MODELS)}, got {name!r}")
    config = config or RewardConfig()
    config.base_model = name
    config.note = f"{name}: a randomly initialised model; its scores are meaningless"
    tokenizer = tiny_random_tokenizer()
    add_reward_tokens(tokenizer, config.dims)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if name == TINY_RANDOM:
            backbone = build_backbone(tiny_qwen_config(tokenizer), dtype)
            model = build_reward_model(backbone, tokenizer, config)
        else:
            backbone = build_backbone(qwen2_vl_2b_config(tokenizer), dtype)
            model = build_reward_model(backbone, tokenizer, config)
            resize_vocab(model.model, QWEN2_VL_2B_VOCAB)  # the real table's rows; the tokenizer uses the first ones
    finally:
        torch.random.set_rng_state(generator_state)
    return model, tokenizer, config


def update_normalization(path: Path, stats: dict[str, dict[str, float]]) -> None:
    """Store per-dimension {"mean", "std"} in a checkpoint folder: our config.json, or the reference's
    model_config.json `inference_config` (`VQ_mean`, `VQ_std`, ...), rewritten atomically."""
    if is_native(path):
        meta = json.loads((path / NATIVE_CONFIG).read_text())
        meta["reward"]["normalization"] = stats
        write_atomic(path / NATIVE_CONFIG, json.dumps(meta, indent=2) + "\n")
    elif (path / "model_config.json").is_file():
        cfg = json.loads((path / "model_config.json").read_text())
        cfg["inference_config"] = {f"{d}_{k}": v[k] for d, v in stats.items() for k in ("mean", "std")}
        write_atomic(path / "model_config.json", json.dumps(cfg, indent=4) + "\n")
    else:
        raise ValueError(f"{path}: not a checkpoint folder (no config.json or model_config.json) to calibrate")
