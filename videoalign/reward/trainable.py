"""What trains in a VideoReward model, and how (docs/numerics.md, Reward training recipe): LoRA on the language model, the vision
tower and merger trained or frozen, only the reward tokens' embedding rows, the head, one learning rate per
group. Also the LoRA factors' extraction, for checkpoints and the reference layout.

The PEFT wrapper gives the state-dict keys of the reference (`base_model.model.<...>.base_layer.weight`,
`.lora_A.default.weight`), so `reward_layouts.to_reference_key` turns them into the released layout directly.
"""

from __future__ import annotations

import torch
from torch import nn

from videoalign.reward.layouts import lora_targets
from videoalign.reward.settings import TrainableConfig


def wrap_for_training(model: nn.Module, cfg: TrainableConfig, reward_token_ids: list[int]):
    """Freeze/unfreeze per `cfg`, add LoRA, mask the embedding gradient to the reward rows.

    Returns (peft_model, param_groups) for torch.optim.AdamW. The embedding is trainable as a whole (so DDP
    and the optimiser see it) but its gradient is zeroed outside the reward-token rows; with weight decay 0,
    AdamW then leaves those rows bit-identical (8.4's equivalent of the reference's restore callback).
    """
    from peft import LoraConfig, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    targets = lora_targets(model, cfg.lora_dict())
    peft_model = get_peft_model(
        model,
        LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                   bias="none"),
        autocast_adapter_dtype=False,
    )
    inner = peft_model.base_model.model
    visual = inner.model.visual
    for name, p in visual.named_parameters():
        p.requires_grad_(cfg.train_merger if name.startswith("merger.") else cfg.train_vision)
    inner.rm_head.weight.requires_grad_(True)
    embed = inner.model.get_input_embeddings().weight
    embed.requires_grad_(True)
    rows = torch.zeros(embed.shape[0], 1, dtype=embed.dtype, device=embed.device)
    rows[reward_token_ids] = 1.0
    embed.register_hook(lambda grad: grad * rows.to(grad.device, grad.dtype))

    groups = {"lora_head": [], "vision": [], "merger": [], "embedding": []}
    for name, p in peft_model.named_parameters():
        if not p.requires_grad:
            continue
        if "embed_tokens" in name:
            groups["embedding"].append(p)
        elif ".visual.merger." in name:
            groups["merger"].append(p)
        elif ".visual." in name:
            groups["vision"].append(p)
        else:
            groups["lora_head"].append(p)
    lrs = {"lora_head": cfg.learning_rate, "vision": cfg.vision_lr, "merger": cfg.merger_lr,
           "embedding": cfg.special_token_lr}
    param_groups = [{"params": ps, "lr": lrs[g], "name": g, "weight_decay": 0.0 if g == "embedding" else cfg.weight_decay}
                     for g, ps in groups.items() if ps]
    return peft_model, param_groups


def lora_factors(peft_model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name (plain model naming): (A (r, in), B (out, r))} of the default adapter."""
    out = {}
    for name, module in peft_model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            out[name] = (module.lora_A["default"].weight.detach().cpu().clone(),
                         module.lora_B["default"].weight.detach().cpu().clone())
    return out


def trainable_state(peft_model) -> dict[str, torch.Tensor]:
    """The tensors that change in training (LoRA, head, vision/merger if trained, embedding), by PEFT name."""
    return {n: p.detach().cpu().clone() for n, p in peft_model.named_parameters() if p.requires_grad}


def enable_activation_checkpointing(backbone) -> None:
    """Recompute each layer's activations in backward (non-reentrant, so frozen inputs are fine).
    transformers renamed gradient_checkpointing_enable to activation_checkpointing_enable in 5.x."""
    if hasattr(backbone, "activation_checkpointing_enable"):
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
