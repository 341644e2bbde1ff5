"""The reference implementation's two checkpoint layouts (docs/numerics.md, Checkpoint layouts), read and written.

    root/model_config.json                     data_config, model_config, peft_lora_config, inference_config
    root/checkpoint-<N>/model.pth              full layout (released): PEFT-wrapped full state dict
    root/checkpoint-<N>/adapter_model.safetensors + non_lora_state_dict.pth     train.sh layout

Keys are in the transformers-4.45 naming. They are remapped to the 5.x naming (6.4), checked strictly against
the set the model expects (every LoRA target has base_layer + lora_A + lora_B; the tied lm_head is the one
tolerated extra), and the LoRA deltas are merged into the base weights in float32: W + (alpha/r) B A.
`.pth` files are opened with `weights_only=True`, so loading a checkpoint never runs code from it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from videoalign.reward.model import (
    TINY_RANDOM,
    RewardConfig,
    VideoRewardModel,
    build_backbone,
    build_reward_model,
    load_base_backbone,
    load_strict,
    load_tokenizer,
    tiny_qwen_config,
    tiny_random_tokenizer,
)

PEFT_PREFIX = "base_model.model."
LORA_SUFFIX = re.compile(r"\.lora_([AB])(?:\.default)?\.weight$")
DEFAULT_LORA = {"r": 64, "alpha": 128, "dropout": 0.05, "exclude": ["lm_head", "rm_head", "embed_tokens", "visual"],
                "target_modules": None, "use_rslora": False}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and the fix."""


def is_reference_root(path: Path) -> bool:
    return (path / "model_config.json").is_file()


def find_step_dir(root: Path, step: int | None) -> Path:
    """checkpoint-<N> with the largest N, or the requested one; the root itself if it holds the weights."""
    steps = {}
    for d in root.glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and d.is_dir():
            steps[int(m.group(1))] = d
    if step is not None:
        if step not in steps:
            have = ", ".join(str(s) for s in sorted(steps)) or "none"
            raise CheckpointError(f"{root}: no checkpoint-{step} folder (steps found: {have}); fix --checkpoint-step")
        return steps[step]
    if steps:
        return steps[max(steps)]
    if (root / "model.pth").is_file() or (root / "adapter_model.safetensors").is_file():
        return root
    raise CheckpointError(
        f"{root}: no checkpoint-<step>/ folder with model.pth or adapter_model.safetensors; "
        "point --model at a VideoReward checkpoint"
    )


def read_model_config(root: Path) -> dict:
    try:
        return json.loads((root / "model_config.json").read_text())
    except ValueError as err:
        raise CheckpointError(f"{root / 'model_config.json'}: not valid JSON ({err}); restore the file") from None


def reward_config_from_reference(cfg: dict) -> RewardConfig:
    """model_config.json sections -> RewardConfig (normalisation from inference_config, if any)."""
    data, model, lora = cfg.get("data_config", {}), cfg.get("model_config", {}), cfg.get("peft_lora_config", {})
    dims = list(data.get("eval_dim") or ["VQ", "MQ", "TA"])
    if model.get("reward_token", "special") != "special" or not model.get("use_special_tokens", True):
        raise CheckpointError("only reward_token='special' checkpoints (the released kind) are supported")
    inference = cfg.get("inference_config")
    norm = None
    if inference:
        norm = {d: {"mean": float(inference[f"{d}_mean"]), "std": float(inference[f"{d}_std"])} for d in dims}
    lora_cfg = None
    if lora.get("lora_enable", False):
        exclude = list(lora.get("lora_namespan_exclude") or DEFAULT_LORA["exclude"])
        if not lora.get("vision_lora", False) and "visual" not in exclude:
            exclude.append("visual")
        lora_cfg = {"r": int(lora.get("lora_r", 64)), "alpha": float(lora.get("lora_alpha", 128)),
                    "dropout": float(lora.get("lora_dropout", 0.05)), "exclude": exclude,
                    "target_modules": lora.get("lora_target_modules"), "use_rslora": bool(lora.get("use_rslora"))}
    return RewardConfig(
        dims=dims,
        output_dim=int(model.get("output_dim", 1)),
        fps=data.get("fps", 2.0) if data.get("num_frames") is None else None,
        num_frames=data.get("num_frames"),
        max_pixels=int(data.get("max_frame_pixels") or 200704),
        template_type=data.get("prompt_template_type", "detailed_special"),
        normalization=norm,
        base_model=model.get("model_name_or_path"),
        lora=lora_cfg,
    )


def lora_targets(model: nn.Module, lora: dict) -> list[str]:
    """Qualified names of the LoRA-wrapped modules: Linear/Embedding named by none of the exclusions
    (or ending in one of `target_modules` when the config lists them), as the reference selects them."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            continue
        if any(x in name for x in lora["exclude"]):
            continue
        targets = lora.get("target_modules")
        if targets and not any(name == t or name.endswith("." + t) for t in targets):
            continue
        names.append(name)
    return names


def remap_reference_key(key: str) -> str:
    """transformers-4.45 keys -> 5.x keys, keeping the PEFT prefix and `.base_layer.` (docs/numerics.md, Checkpoint layouts)."""
    if key.startswith(PEFT_PREFIX + "visual."):
        return PEFT_PREFIX + "model." + key[len(PEFT_PREFIX):]
    if key.startswith(PEFT_PREFIX + "model."):
        rest = key[len(PEFT_PREFIX + "model."):]
        if not rest.startswith(("visual.", "language_model.")):
            return PEFT_PREFIX + "model.language_model." + rest
    return key


def to_reference_key(key: str) -> str:
    """Inverse of remap_reference_key: 5.x PEFT keys -> the 4.45 names the reference writes."""
    if key.startswith(PEFT_PREFIX + "model.visual."):
        return PEFT_PREFIX + key[len(PEFT_PREFIX + "model."):]
    if key.startswith(PEFT_PREFIX + "model.language_model."):
        return PEFT_PREFIX + "model." + key[len(PEFT_PREFIX + "model.language_model."):]
    return key


def merge_lora_state(state: dict, model: VideoRewardModel, lora: dict | None, source: str) -> dict:
    """PEFT-format state (5.x names) -> plain state dict of `model`, merging each LoRA pair in float32.

    The merged weight is cast to the *model's* dtype, never back to the file's: the released file is bf16,
    and rounding W + (alpha/r) B A to bf16 moves float32 scores by about 1e-2.
    """
    model_dtype = next(model.parameters()).dtype
    targets = set(lora_targets(model, lora)) if lora else set()
    plain: dict[str, torch.Tensor] = {}
    deltas: dict[str, dict[str, torch.Tensor]] = {}
    unexpected = []
    for key, tensor in state.items():
        if not key.startswith(PEFT_PREFIX):
            unexpected.append(key)
            continue
        name = key[len(PEFT_PREFIX):]
        m = LORA_SUFFIX.search(name)
        if m:
            deltas.setdefault(name[: m.start()], {})[m.group(1)] = tensor
        elif ".base_layer." in name:
            plain[name.replace(".base_layer.", ".")] = tensor
        else:
            plain[name] = tensor
    for module in sorted(set(deltas) | targets):
        pair = deltas.get(module, {})
        if module not in targets:
            unexpected.append(f"{PEFT_PREFIX}{module}.lora_*")
            continue
        if set(pair) != {"A", "B"}:
            raise CheckpointError(f"{source}: LoRA weights for {module} are incomplete (have {sorted(pair)}); "
                                  "the checkpoint is damaged or from another model")
        a, b = pair["A"].float(), pair["B"].float()
        if a.shape[0] != lora["r"]:
            raise CheckpointError(f"{source}: LoRA rank of {module} is {a.shape[0]}, model_config says {lora['r']}")
        scale = lora["alpha"] / (lora["r"] ** 0.5 if lora.get("use_rslora") else lora["r"])
        weight_key = f"{module}.weight"
        if weight_key not in plain:
            raise CheckpointError(f"{source}: {PEFT_PREFIX}{module}.base_layer.weight is missing")
        plain[weight_key] = (plain[weight_key].float() + scale * (b @ a)).to(model_dtype)
    if unexpected:
        raise CheckpointError(f"{source}: {len(unexpected)} unexpected keys ({', '.join(sorted(unexpected)[:8])})")
    return plain


def load_reference(root: Path, dtype: torch.dtype, base_model: str | None = None, step: int | None = None):
    """Either reference layout -> (model, tokenizer, RewardConfig, step_dir)."""
    cfg = read_model_config(root)
    config = reward_config_from_reference(cfg)
    step_dir = find_step_dir(root, step)
    base = resolve_base(root, base_model or config.base_model)
    config.base_model = base
    full = step_dir / "model.pth"
    if base == TINY_RANDOM:  # a tiny model trained from scratch: its architecture is built in-process
        if not full.is_file():
            raise CheckpointError(f"{step_dir}: a tiny-random base has no stored weights; only the full layout loads")
        tokenizer = tiny_random_tokenizer()
        base_config = tiny_qwen_config(tokenizer)
    else:
        tokenizer = load_tokenizer(base)
    if full.is_file():
        # Full layout: every tensor is in model.pth, so the base's config is enough (no base weights).
        from transformers import AutoConfig

        if base != TINY_RANDOM:
            base_config = AutoConfig.from_pretrained(base)
        backbone = build_backbone(base_config, dtype, init=False)
        model = build_reward_model(backbone, tokenizer, config)
        state = _torch_load(full)
        peft_state = {remap_reference_key(k): v for k, v in state.items()}
        peft_state.pop(PEFT_PREFIX + "lm_head.weight", None)  # tied copy, unused (docs/numerics.md, Checkpoint layouts)
        plain = merge_lora_state(peft_state, model, config.lora, str(full))
        load_strict(model, plain, source=str(full))
        return model, tokenizer, config, step_dir
    adapter = step_dir / "adapter_model.safetensors"
    non_lora = step_dir / "non_lora_state_dict.pth"
    if not (adapter.is_file() and non_lora.is_file()):
        raise CheckpointError(f"{step_dir}: needs model.pth, or adapter_model.safetensors with non_lora_state_dict.pth")
    # train.sh layout: start from the base weights, overlay the non-LoRA tensors, then the LoRA tensors.
    from safetensors.torch import load_file

    model = build_reward_model(load_base_backbone(base, dtype), tokenizer, config)
    peft_state = _as_peft_state(model, config.lora)
    overlay = {remap_reference_key(k): v for k, v in _torch_load(non_lora).items()}
    overlay.pop(PEFT_PREFIX + "lm_head.weight", None)
    _overlay(peft_state, overlay, str(non_lora))
    lora_state = {}
    for key, value in load_file(str(adapter)).items():
        key = remap_reference_key(key if key.startswith(PEFT_PREFIX) else PEFT_PREFIX + key)
        lora_state[LORA_SUFFIX.sub(lambda m: f".lora_{m.group(1)}.default.weight", key)] = value
    _overlay(peft_state, lora_state, str(adapter))
    load_strict(model, merge_lora_state(peft_state, model, config.lora, str(adapter)), source=str(step_dir))
    return model, tokenizer, config, step_dir


def resolve_base(root: Path, name: str | None) -> str:
    """Base Qwen2-VL location: an existing path as given, else beside the checkpoint root, else a hub id."""
    if not name:
        raise CheckpointError(f"{root / 'model_config.json'} names no model_name_or_path; pass --base-model")
    for candidate in (Path(name), root.parent / name, root / name):
        if candidate.is_dir():
            return str(candidate)
    return name


def _as_peft_state(model: VideoRewardModel, lora: dict | None) -> dict:
    """The model's plain state in PEFT naming, with zero LoRA factors of the configured rank."""
    targets = set(lora_targets(model, lora)) if lora else set()
    modules = dict(model.named_modules())
    state = {}
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in targets:
            state[f"{PEFT_PREFIX}{module}.base_layer.{leaf}"] = value
            if leaf == "weight":
                out_f, in_f = modules[module].weight.shape
                state[f"{PEFT_PREFIX}{module}.lora_A.default.weight"] = value.new_zeros(lora["r"], in_f)
                state[f"{PEFT_PREFIX}{module}.lora_B.default.weight"] = value.new_zeros(out_f, lora["r"])
        else:
            state[PEFT_PREFIX + key] = value
    return state


def _overlay(state: dict, overlay: dict, source: str) -> None:
    unknown = sorted(k for k in overlay if k not in state)
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} unexpected keys ({', '.join(unknown[:8])})")
    bad = [k for k, v in overlay.items() if tuple(v.shape) != tuple(state[k].shape)]
    if bad:
        raise CheckpointError(f"{source}: shape mismatch for {', '.join(bad[:4])}")
    state.update(overlay)


def _torch_load(path: Path) -> dict:
    try:
        # mmap: the released model.pth is 5 GB; tensors are paged in as they are copied into the model.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot be read as a weights-only state dict ({err.__class__.__name__}); "
                              "it is damaged, or holds pickled code, which is refused") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def save_reference(model: VideoRewardModel, tokenizer, config: RewardConfig, root: str | Path,
                   layout: str = "full", step: int = 0, lora_state: dict | None = None) -> Path:
    """Write the reference layout `full` (model.pth) or `lora` (adapter + non_lora_state_dict.pth).

    `lora_state` maps module names to (A, B) factors. The `full` layout without it writes the model's (merged)
    weights as base_layer with zero B, which loads back to the same scores. The `lora` layout stores only the
    adapters and the non-LoRA tensors (the LLM weights come from the base model when it is loaded), so it
    needs the real factors: exporting a merged model to it would silently drop its LoRA deltas.
    """
    if layout == "lora" and lora_state is None:
        raise ValueError("the lora layout stores adapters only: pass lora_state (the trained LoRA factors) "
                         "or export with layout='full'")
    from safetensors.torch import save_file

    root = Path(root)
    step_dir = root / f"checkpoint-{step}"
    step_dir.mkdir(parents=True, exist_ok=True)
    lora = config.lora or dict(DEFAULT_LORA)
    peft_state = _as_peft_state(model, lora)
    for module, (a, b) in (lora_state or {}).items():
        peft_state[f"{PEFT_PREFIX}{module}.lora_A.default.weight"] = a
        peft_state[f"{PEFT_PREFIX}{module}.lora_B.default.weight"] = b
    ref_state = {to_reference_key(k): v.detach().cpu().contiguous() for k, v in peft_state.items()}
    embed = ref_state[PEFT_PREFIX + "model.embed_tokens.weight"]
    if layout == "full":
        ref_state[PEFT_PREFIX + "lm_head.weight"] = embed.clone()
        torch.save(ref_state, step_dir / "model.pth")
    elif layout == "lora":
        is_lora = {k: v for k, v in ref_state.items() if LORA_SUFFIX.search(k)}
        adapter = {k.replace(".default.weight", ".weight"): v for k, v in is_lora.items()}
        save_file(adapter, str(step_dir / "adapter_model.safetensors"))
        non_lora = {k: v for k, v in ref_state.items() if k not in is_lora and (
            ".visual." in k or "embed_tokens" in k or "rm_head" in k)}
        torch.save(non_lora, step_dir / "non_lora_state_dict.pth")
        (step_dir / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "r": lora["r"], "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"],
             "target_modules": sorted({n.rsplit(".", 1)[-1] for n in lora_targets(model, lora)}),
             "bias": "none", "task_type": "CAUSAL_LM"}, indent=2))
    else:
        raise ValueError(f"layout {layout!r} is unknown; use 'full' or 'lora'")
    tokenizer.save_pretrained(step_dir / "tokenizer")
    (root / "model_config.json").write_text(json.dumps(reference_model_config(config, lora), indent=4))
    return step_dir


def reference_model_config(config: RewardConfig, lora: dict) -> dict:
    """RewardConfig -> the reference's model_config.json sections."""
    out = {
        "data_config": {"meta_data": None, "data_dir": None, "max_frame_pixels": config.max_pixels,
                        "num_frames": config.num_frames, "fps": config.fps, "eval_dim": list(config.dims),
                        "prompt_template_type": config.template_type, "sample_type": "uniform"},
        "training_args": {},
        "model_config": {"model_name_or_path": config.base_model, "output_dim": config.output_dim,
                         "use_special_tokens": True, "reward_token": "special", "loss_type": "btt"},
        "peft_lora_config": {"lora_enable": True, "vision_lora": False, "lora_r": lora["r"],
                             "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"],
                             "lora_target_modules": lora.get("target_modules"),
                             "lora_namespan_exclude": lora["exclude"], "lora_task_type": "CAUSAL_LM",
                             "use_rslora": lora.get("use_rslora", False)},
    }
    if config.normalization:
        out["inference_config"] = {f"{d}_{s}": config.normalization[d][s] for d in config.dims for s in ("mean", "std")}
    return out
