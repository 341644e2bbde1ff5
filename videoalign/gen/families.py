"""Model families of rectified-flow text-to-video generators: what differs between them, found from a model id or
folder without loading any weights (docs/numerics.md, Flow conventions). Importing this module does not import torch.

A `Family` holds the latent layout, the timestep scale and direction, the text length, the modules LoRA may target
and the dtypes that do not work. Wan2.1/2.2 text-to-video (`WanPipeline`) is implemented; families that are not
rectified flow in the x_t = (1 - t) x0 + t noise convention are refused by name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

#: the file diffusers' save_lora_weights writes and load_lora_weights reads in a LoRA folder
LORA_FILE = "pytorch_lora_weights.safetensors"

TINY_RANDOM = "tiny-random"
#: the Wan2.1-T2V-1.3B transformer architecture with random weights (gen/tiny.py; for real-size speed figures)
WAN_1_3B_RANDOM = "wan2.1-1.3b-random"
DEFAULT_MODEL = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
#: pipeline classes whose models are not rectified flow as Flow-DPO/RWR/NRG assume it (docs/numerics.md, Flow conventions)
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
#: the paper's LoRA targets on Wan: q/k/v/o of self- and cross-attention (docs/numerics.md, Flow conventions)
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
    except Exception as exc:
        raise ValueError(f"{repo}: cannot fetch {filename} from the Hugging Face hub ({type(exc).__name__}); "
                         "download the model and pass its folder, or use tiny-random") from None


def model_kind(path: str) -> str:
    """"lora", "transformer" or "pipeline": a LoRA (a .safetensors file, or a folder with pytorch_lora_weights.safetensors), a full fine-tune's
    transformer (final/ with transformer/config.json, or that folder) or a pipeline (model_index.json, a hub id
    or tiny-random), from the files at `path`."""
    p = Path(path)
    if path == TINY_RANDOM or not p.exists() or (p / "model_index.json").is_file():
        return "pipeline"
    if (p.is_file() and p.suffix == ".safetensors") or (p / LORA_FILE).is_file():
        return "lora"
    if (p / "transformer" / "config.json").is_file() or (p / "config.json").is_file():
        return "transformer"
    raise ValueError(f"aligned: {path}: not a model; expected a diffusers pipeline folder (model_index.json), a LoRA "
                     f"({LORA_FILE}, what dpo/rwr write to final/, or that file) or a full fine-tune's final/ "
                     "(transformer/config.json)")
