"""The diffusers side: load a rectified-flow text-to-video model, encode prompts and videos, velocity, LoRA, sampling.

A `Family` holds what differs between model families (latent normalisation, the timestep scale and direction,
text encoding, valid LoRA targets, dtypes that do not work). Only Wan2.1/2.2 text-to-video (`WanPipeline`) is
implemented; families that are not rectified flow in the x_t = (1 - t) x0 + t noise convention are refused by
name (REFERENCE.md 10.1, 11).

`tiny-random` builds a seeded tiny Wan (transformer, VAE, UMT5 and a BPE tokenizer trained in-process) for tests
and offline smoke runs; it saves and loads like a real diffusers folder.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from videoalign.flow import euler_step, sampling_times

#: the file diffusers' save_lora_weights writes and load_lora_weights reads in a LoRA folder
LORA_FILE = "pytorch_lora_weights.safetensors"

TINY_RANDOM = "tiny-random"
DEFAULT_MODEL = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: pipeline classes whose models are not rectified flow as Flow-DPO/RWR/NRG assume it (REFERENCE.md 11)
NOT_RECTIFIED_FLOW = {
    "CogVideoXPipeline": "CogVideoX uses a v-prediction DDPM scheduler, not rectified flow",
    "MochiPipeline": "Mochi runs time in reverse (t = 1 is data)",
    "AnimateDiffPipeline": "AnimateDiff is an epsilon-prediction DDPM model",
    "LattePipeline": "Latte is an epsilon-prediction DDPM model",
    "I2VGenXLPipeline": "I2VGen-XL is an epsilon-prediction DDPM model",
    "TextToVideoSDPipeline": "ModelScope text-to-video is an epsilon-prediction DDPM model",
}


@dataclass(frozen=True)
class Family:
    """What differs between model families."""

    name: str
    pipeline_class: str
    temporal_factor: int  # latent frames = (F - 1) / temporal_factor + 1
    spatial_multiple: int  # H and W must be multiples of this (VAE 8x times patch 2)
    timestep_scale: float  # the transformer's timestep input is t * timestep_scale
    default_shift: float
    text_max_length: int
    #: Linear modules LoRA may target (names relative to a block, or top-level)
    lora_modules: tuple[str, ...]
    refused_dtypes: dict = field(default_factory=dict)

    def check_frames(self, num_frames: int) -> str | None:
        if num_frames < 1 or (num_frames - 1) % self.temporal_factor:
            k = max(0, round((num_frames - 1) / self.temporal_factor))
            return (f"{self.name} needs (num_frames - 1) % {self.temporal_factor} == 0, got {num_frames}; use "
                    f"{self.temporal_factor * k + 1}")
        return None

    def check_clip(self, num_frames: int | None, height: int | None, width: int | None) -> None:
        """Raise a ValueError naming the field when a clip size does not fit the VAE and patching (None: unset)."""
        if num_frames is not None and (problem := self.check_frames(num_frames)):
            raise ValueError(f"num_frames: {problem}")
        for name, value in (("height", height), ("width", width)):
            if value is not None and (value < self.spatial_multiple or value % self.spatial_multiple):
                raise ValueError(f"{name}: {self.name} needs a multiple of {self.spatial_multiple}, got {value}")

    def check_lora_targets(self, targets: list[str]) -> str | None:
        bad = [t for t in targets if not any(m == _block_relative(t) or m.endswith("." + _block_relative(t))
                                             for m in self.lora_modules)]
        if bad:
            return (f"{self.name} has no module {', '.join(bad)}; LoRA can target "
                    f"{', '.join(m for m in self.lora_modules)}")
        return None

    def latent_shape(self, num_frames: int, height: int, width: int, channels: int = 16) -> tuple[int, ...]:
        """(C, F', H', W') of a video of num_frames x height x width."""
        return (channels, (num_frames - 1) // self.temporal_factor + 1, height // 8, width // 8)


def _block_relative(target: str) -> str:
    return re.sub(r"^blocks\.\d+\.", "", target)


_WAN_ATTN = tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0"))
WAN = Family(
    name="Wan", pipeline_class="WanPipeline", temporal_factor=4, spatial_multiple=16, timestep_scale=1000.0,
    default_shift=3.0, text_max_length=512,
    lora_modules=_WAN_ATTN + ("attn2.add_k_proj", "attn2.add_v_proj", "ffn.net.0.proj", "ffn.net.2", "proj_out",
                              "condition_embedder.time_embedder.linear_1", "condition_embedder.time_embedder.linear_2",
                              "condition_embedder.time_proj", "condition_embedder.text_embedder.linear_1",
                              "condition_embedder.text_embedder.linear_2"),
    refused_dtypes={"float16": "Wan does not produce valid videos in float16 (activations overflow); use bfloat16 "
                               "or float32"},
)
FAMILIES = {"WanPipeline": WAN}
#: the paper's LoRA targets on Wan: q/k/v/o of self- and cross-attention (REFERENCE.md 10.2)
WAN_LORA_TARGETS = list(_WAN_ATTN)


def family_of(model: str) -> Family:
    """The family of a model id or folder, from its model_index.json (read without loading any weights)."""
    if model == TINY_RANDOM:
        return WAN
    index = Path(model) / "model_index.json"
    if not index.is_file():
        if Path(model).exists():
            raise ValueError(f"{model}: not a diffusers pipeline folder (no model_index.json); pass a folder saved "
                             "with save_pretrained, a hub id or tiny-random")
        lowered = model.lower()
        for cls in NOT_RECTIFIED_FLOW:
            if cls.lower().removesuffix("pipeline") in lowered:
                return _family_for_class(cls, model)
        if "wan" in lowered:
            return WAN
        index = Path(_hub_file(model, "model_index.json"))
    cls = json.loads(index.read_text()).get("_class_name", "")
    return _family_for_class(cls, model)


def _family_for_class(cls: str, model: str) -> Family:
    if cls in FAMILIES:
        return FAMILIES[cls]
    if cls in NOT_RECTIFIED_FLOW:
        raise ValueError(f"{model}: {NOT_RECTIFIED_FLOW[cls]}; Flow-DPO, Flow-RWR and Flow-NRG need a rectified-flow "
                         f"model with x_t = (1 - t) x0 + t noise. Supported: {', '.join(FAMILIES)}")
    raise ValueError(f"{model}: pipeline {cls or '?'} is not supported; supported: {', '.join(FAMILIES)}")


def _hub_file(repo: str, filename: str) -> str:
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, filename)
    except Exception as exc:  # noqa: BLE001 - offline, gated or missing: one clear line
        raise ValueError(f"{repo}: cannot fetch {filename} from the Hugging Face hub ({type(exc).__name__}); "
                         "download the model and pass its folder, or use tiny-random") from None


@dataclass
class Generator:
    """A loaded text-to-video model. The VAE stays in float32; the transformer runs in `dtype`."""

    family: Family
    transformer: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    dtype: torch.dtype
    text_max_length: int

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device) -> Generator:
        for module in (self.transformer, self.vae, self.text_encoder):
            module.to(device)
        return self

    # -- encoding -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> list[torch.Tensor]:
        """One (n_i, D) float32 tensor per prompt: the text encoder's states at the n_i real tokens (as WanPipeline
        computes them); `pad_text` restores the zero-padded (B, max_length, D) the transformer sees."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        device = next(self.text_encoder.parameters()).device
        inputs = self.tokenizer([prompt_clean(p) for p in prompts], padding="max_length",
                                max_length=self.text_max_length, truncation=True, add_special_tokens=True,
                                return_attention_mask=True, return_tensors="pt")
        mask = inputs.attention_mask
        states = self.text_encoder(inputs.input_ids.to(device), mask.to(device)).last_hidden_state.float().cpu()
        return [s[:n] for s, n in zip(states, mask.gt(0).sum(dim=1).tolist())]

    def pad_text(self, embeds: list[torch.Tensor]) -> torch.Tensor:
        """(B, max_length, D) with zeros after each prompt's real tokens."""
        out = embeds[0].new_zeros(len(embeds), self.text_max_length, embeds[0].shape[-1])
        for row, e in zip(out, embeds):
            row[:e.shape[0]] = e
        return out

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        shape = (1, len(cfg.latents_mean), 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32, device=like.device).view(shape)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32, device=like.device).view(shape)
        return mean, std

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (F, H, W, 3) -> normalised latents (C, F', H', W') float32: z = (mode - mean) / std."""
        device = next(self.vae.parameters()).device
        pixels = frames.permute(3, 0, 1, 2).unsqueeze(0).to(device, torch.float32) / 127.5 - 1  # (1, 3, F, H, W)
        z = self.vae.encode(pixels).latent_dist.mode()
        mean, std = self._latent_stats(z)
        return ((z - mean) / std)[0].float().cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, F', H', W') -> uint8 frames (B, F, H, W, 3)."""
        device = next(self.vae.parameters()).device
        z = latents.to(device, torch.float32)
        mean, std = self._latent_stats(z)
        video = self.vae.decode(z * std + mean).sample  # (B, 3, F, H, W) in [-1, 1]
        return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()

    # -- the transformer ------------------------------------------------------------------------------------
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, transformer=None) -> torch.Tensor:
        """v_theta(x_t, t, text) in float32: x_t (B, C, F', H', W'), t (B,) in [0, 1], text (B, L, D)."""
        model = transformer if transformer is not None else self.transformer
        timestep = (t.float() * self.family.timestep_scale).to(x_t.device)
        # Full fine-tuning turns the generator's own transformer into float32 masters: then every forward (the
        # policy, and the frozen reference passed as `transformer`, so that both compute alike) runs in self.dtype
        # under autocast. The patch embedding tells (_cast never keeps it in float32; scale_shift_table, which may
        # come first, it does).
        probe = getattr(self.transformer, "patch_embedding", None)
        masters = probe is not None and probe.weight.dtype == torch.float32 and self.dtype != torch.float32
        if not masters:
            out = model(hidden_states=x_t.to(self.dtype), timestep=timestep,
                        encoder_hidden_states=text.to(self.dtype), return_dict=False)[0]
            return out.float()
        with torch.autocast(device_type=x_t.device.type, dtype=self.dtype):
            out = model(hidden_states=x_t.float(), timestep=timestep, encoder_hidden_states=text.float(),
                        return_dict=False)[0]
        return out.float()

    @torch.no_grad()
    def sample(self, text: torch.Tensor, seeds: list[int], latent_shape: tuple[int, ...], steps: int = 50,
               shift: float | None = None, guidance_scale: float = 5.0, negative_text: torch.Tensor | None = None,
               velocity_hook=None) -> torch.Tensor:
        """Euler sampling from t = 1 to 0 (normalised latents (B, C, F', H', W') float32).

        text (B, L, D); noise of row i is randn(latent_shape) from torch.Generator().manual_seed(seeds[i]) on the
        CPU, so samples do not depend on the batch or the device. CFG: v = v_neg + g (v_cond - v_neg) when
        negative_text (B, L, D) is given and g != 1. `velocity_hook(x, t, v) -> v` may change v (reward guidance).
        """
        device = self.device
        noise = [torch.randn(latent_shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        x = torch.stack(noise).to(device)
        cfg = negative_text is not None and guidance_scale != 1.0
        cond = torch.cat([text, negative_text]) if cfg else text
        times = sampling_times(steps, self.family.default_shift if shift is None else shift).tolist()
        for t, t_next in zip(times[:-1], times[1:]):
            batch_t = torch.full((x.shape[0] * (2 if cfg else 1),), t)
            v = self.velocity(torch.cat([x, x]) if cfg else x, batch_t, cond.to(device))
            if cfg:
                v_cond, v_neg = v.chunk(2)
                v = v_neg + guidance_scale * (v_cond - v_neg)
            if velocity_hook is not None:
                v = velocity_hook(x, t, v)
            x = euler_step(x, v, t, t_next)
        return x.float()


# -- LoRA ---------------------------------------------------------------------------------------------------

def add_lora(transformer, rank: int, alpha: float, targets: list[str], dropout: float = 0.0) -> None:
    """Attach the adapter "default" (B = 0, so the model is unchanged) and freeze everything else."""
    from peft import LoraConfig

    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                                       init_lora_weights=True))
    for name, p in transformer.named_parameters():
        p.requires_grad_("lora_" in name)


@contextlib.contextmanager
def adapters_disabled(transformer):
    """The reference model of Flow-DPO: the same transformer with its LoRA off (REFERENCE.md 10.5)."""
    transformer.disable_adapters()
    try:
        yield transformer
    finally:
        transformer.enable_adapters()


def lora_state(transformer) -> dict[str, torch.Tensor]:
    """The adapter's tensors in diffusers/peft naming (`blocks.0.attn1.to_q.lora_A.weight`)."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer)


def save_lora(transformer, out_dir: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write pytorch_lora_weights.safetensors (with the LoRA config as metadata) for `pipe.load_lora_weights`."""
    from diffusers import WanPipeline

    state = lora_state(transformer) if state is None else state
    config = transformer.peft_config["default"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])
    WanPipeline.save_lora_weights(str(out_dir), transformer_lora_layers={k: v.contiguous() for k, v in state.items()},
                                  transformer_lora_adapter_metadata=config)
    return out_dir / LORA_FILE


def check_lora_file(transformer, path: str | Path) -> None:
    """Raise ValueError unless every module a diffusers-format LoRA (a folder with pytorch_lora_weights.safetensors,
    or the file) adapts exists in `transformer` as a Linear with the LoRA's sizes; diffusers itself only warns
    about unknown modules. Keys in other formats are left to diffusers' converters."""
    from safetensors import safe_open

    file = Path(path) / LORA_FILE if Path(path).is_dir() else Path(path)
    try:
        with safe_open(str(file), "pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118 - not a dict
    except Exception as exc:  # noqa: BLE001 - any unreadable file: one line
        raise ValueError(f"{file}: not a readable .safetensors file ({type(exc).__name__})") from None
    if not any("lora" in k for k in shapes):
        raise ValueError(f"{file} holds no LoRA weights; pass the final/ folder of dpo or rwr")
    modules = dict(transformer.named_modules())
    for key, shape in shapes.items():
        name, _, kind = key.removeprefix("transformer.").partition(".lora_")
        if not key.startswith("transformer.") or kind not in ("A.weight", "B.weight"):
            continue
        module, side = modules.get(name), "in" if kind == "A.weight" else "out"
        want = getattr(module, f"{side}_features") if isinstance(module, torch.nn.Linear) else None
        got = shape[1] if side == "in" else shape[0]
        if want != got:
            has = "has no such layer" if want is None else f"has {want} {side} features"
            raise ValueError(f"the LoRA {file} does not fit the model: it adapts {name} with {got} {side} features, "
                             f"the model {has}")


def load_lora(gen: Generator, path: str | Path, fuse: bool = False) -> Generator:
    """Load an exported LoRA (a folder or .safetensors file) into gen's transformer the way users do, through
    WanPipeline.load_lora_weights, after check_lora_file; fuse=True merges it into the weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    check_lora_file(gen.transformer, path)

    pipe = WanPipeline(tokenizer=gen.tokenizer, text_encoder=gen.text_encoder, vae=gen.vae,
                       transformer=gen.transformer, scheduler=FlowMatchEulerDiscreteScheduler())
    pipe.load_lora_weights(str(path))
    if fuse:
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    return gen


def check_transformer_folder(transformer, path: str | Path) -> Path:
    """The transformer folder of a full fine-tune (`path/transformer/` or `path` itself), after checking from its
    config.json alone that it is `transformer`'s architecture (every public key equal; a ValueError names the
    first that differs)."""
    folder = Path(path) / "transformer" if (Path(path) / "transformer" / "config.json").is_file() else Path(path)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{path}: no transformer/config.json; pass the final/ folder of a full fine-tune")
    saved = json.loads((folder / "config.json").read_text())
    ours = dict(transformer.config)
    for key in sorted(k for k in saved if not k.startswith("_") and k in ours):
        want, got = ours[key], saved[key]
        if (list(want) if isinstance(want, tuple) else want) != got:
            raise ValueError(f"{folder} is another architecture: {key} is {got}, the model's is {want}")
    return folder


def load_transformer(gen: Generator, path: str | Path) -> Generator:
    """gen with its transformer replaced by a full fine-tune's: a `transformer/` folder (config.json +
    safetensors, what dpo/rwr with lora.enabled false export to final/transformer) or the final/ folder holding
    it, checked by check_transformer_folder."""
    import dataclasses

    from diffusers import WanTransformer3DModel

    folder = check_transformer_folder(gen.transformer, path)
    transformer = WanTransformer3DModel.from_pretrained(str(folder), torch_dtype=gen.dtype)
    transformer = _cast(transformer, gen.dtype).requires_grad_(False).eval().to(gen.device)
    return dataclasses.replace(gen, transformer=transformer)


# -- building and loading -----------------------------------------------------------------------------------

def tiny_text_tokenizer():
    """A 384-token BPE trained in-process (deterministic, milliseconds) with T5-style <pad>, </s>, <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from videoalign.reward.inputs import fill_template, load_template

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False)
    backend.train_from_iterator([fill_template(load_template(), "")], trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=32)


def tiny_random_components(seed: int = 0) -> dict:
    """Seeded tiny Wan: transformer (2 blocks, width 32), VAE (8x spatial, 4x temporal), UMT5 (2 layers, 32)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_text_tokenizer()
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(seed + 2)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8, pad_token_id=0,
                                               eos_token_id=1, decoder_start_token_id=0))
    return {"transformer": transformer.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
            "tokenizer": tokenizer, "scheduler": FlowMatchEulerDiscreteScheduler(shift=WAN.default_shift)}


def load_generator(model: str = DEFAULT_MODEL, dtype: str = "bfloat16", device: str | torch.device = "cpu",
                   seed: int = 0) -> Generator:
    """tiny-random, a diffusers pipeline folder or a hub id. The transformer and text encoder take `dtype`,
    the VAE float32. Refused dtypes (fp16 on Wan) raise with the reason."""
    family = family_of(model)
    if dtype in family.refused_dtypes:
        raise ValueError(f"dtype {dtype}: {family.refused_dtypes[dtype]}")
    torch_dtype = DTYPES[dtype]
    if model == TINY_RANDOM:
        parts = tiny_random_components(seed)
    else:
        parts = _load_parts(model, torch_dtype)
    tokenizer = parts["tokenizer"]
    max_length = min(family.text_max_length, int(getattr(tokenizer, "model_max_length", family.text_max_length)))
    gen = Generator(family, _cast(parts["transformer"], torch_dtype), _cast(parts["vae"], torch.float32),
                    _cast(parts["text_encoder"], torch_dtype), tokenizer, torch_dtype, max_length)
    for module in (gen.transformer, gen.vae, gen.text_encoder):
        module.requires_grad_(False).eval()
    return gen.to(device)


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast to dtype but keep the model's `_keep_in_fp32_modules` (Wan: rope, time embedder, norms) in float32, as
    from_pretrained(torch_dtype=...) does; a no-op when already there."""
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or [])
    if hasattr(module, "_keep_in_fp32_modules_strict"):
        # transformers applies `_keep_in_fp32_modules` for float16 only (UMT5's `wo` stays bf16 in bf16), and the
        # `_strict` list for float16 and bfloat16
        keep = (keep if dtype == torch.float16 else set()) | set(module._keep_in_fp32_modules_strict or [])
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        # tensors of kept modules (and kept parameters such as Wan's scale_shift_table) never pass through dtype:
        # casting everything and back would round them
        target = torch.float32 if dtype != torch.float32 and keep & set(name.split(".")) else dtype
        if tensor.is_floating_point() and tensor.dtype != target:
            tensor.data = tensor.data.to(target)
    return module


def _load_parts(model: str, torch_dtype) -> dict:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    root = Path(model)
    if not root.is_dir():
        from huggingface_hub import snapshot_download

        try:
            root = Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "tokenizer/*",
                                                                 "*.model", "*.txt"]))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{model}: cannot download from the Hugging Face hub ({type(exc).__name__}); download "
                             "it and pass its folder, or use tiny-random") from None
    return {"transformer": WanTransformer3DModel.from_pretrained(root, subfolder="transformer", torch_dtype=torch_dtype),
            "vae": AutoencoderKLWan.from_pretrained(root, subfolder="vae", torch_dtype=torch.float32),
            "text_encoder": UMT5EncoderModel.from_pretrained(root / "text_encoder", dtype=torch_dtype),
            "tokenizer": AutoTokenizer.from_pretrained(root / "tokenizer")}


def save_pipeline(gen: Generator, out_dir: str | Path, scheduler=None) -> Path:
    """Save as a diffusers WanPipeline folder (what load_generator and WanPipeline.from_pretrained read)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    pipe = WanPipeline(tokenizer=gen.tokenizer, text_encoder=gen.text_encoder, vae=gen.vae,
                       transformer=gen.transformer,
                       scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=gen.family.default_shift))
    pipe.save_pretrained(str(out_dir))
    return Path(out_dir)
