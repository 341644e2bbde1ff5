"""LoRA on a generator's transformer: attach (the paper's q/k/v/o targets), disable for the Flow-DPO reference, export
in diffusers' format (what `pipe.load_lora_weights` reads), check and load an exported LoRA, and load a full
fine-tune's transformer in place of the base's."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from videoalign.gen.families import LORA_FILE
from videoalign.gen.generator import Generator, cast_module


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
    """The reference model of Flow-DPO: the same transformer with its LoRA off (docs/numerics.md, Flow-DPO)."""
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
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:
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
    transformer = cast_module(transformer, gen.dtype).requires_grad_(False).eval().to(gen.device)
    return dataclasses.replace(gen, transformer=transformer)


