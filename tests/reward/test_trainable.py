"""What trains in train-reward (videoalign/reward_lora.py): LoRA targets, frozen parts, embedding rows."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from videoalign.losses import btt_loss, reduce_loss
from videoalign.reward.model import RewardConfig, build_tiny_random
from videoalign.reward.trainable import (
    TrainableConfig,
    enable_activation_checkpointing,
    lora_factors,
    wrap_for_training,
)
from videoalign.reward.videoreward import VideoReward
from videoalign.reward.vision import preprocess_frames


def _batch(rm: VideoReward, seed: int = 0):
    """Two tiny synthetic videos (A, B) for one pair, collated as [A; B]."""
    g = torch.Generator().manual_seed(seed)
    pixels = [preprocess_frames(torch.randint(0, 255, (4, 3, 56, 56), dtype=torch.uint8, generator=g),
                                max_pixels=3136, min_pixels=3136) for _ in range(2)]
    tokens = [rm.inputs.tokenize("a prompt", p.num_tokens) for p in pixels]
    return rm.inputs.collate(tokens, pixels)


def _setup(cfg: TrainableConfig, seed: int = 0):
    model, tokenizer, config = build_tiny_random(seed=seed, config=RewardConfig(min_pixels=3136, max_pixels=3136))
    rm = VideoReward(model, tokenizer, config)
    torch.manual_seed(0)
    peft_model, groups = wrap_for_training(model, cfg, rm.inputs.reward_token_ids)
    peft_model.train()
    return rm, peft_model, groups


def _step(peft_model, rm, lr_scale=1.0):
    batch = _batch(rm)
    rewards = peft_model(**batch)
    loss, mask = btt_loss(rewards[:1], rewards[1:], torch.tensor([[1, -1, 0]]))
    return reduce_loss(loss, mask)


def test_only_reward_rows_of_the_embedding_change():
    cfg = TrainableConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=1e-2, vision_lr=1e-2,
                          merger_lr=1e-2, special_token_lr=1e-2)
    rm, peft_model, groups = _setup(cfg)
    embed = peft_model.base_model.model.model.get_input_embeddings().weight
    before = embed.detach().clone()
    optimizer = torch.optim.AdamW(groups)
    for _ in range(3):
        _step(peft_model, rm).backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = (embed.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == sorted(rm.inputs.reward_token_ids)
    assert {g["name"]: g["weight_decay"] for g in groups}["embedding"] == 0.0


def test_lora_targets_groups_and_frozen_parts():
    cfg = TrainableConfig(lora_r=4, lora_alpha=8, train_vision=False, train_merger=True)
    rm, peft_model, groups = _setup(cfg)
    names = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert not any(".visual.blocks." in n for n in names)  # frozen tower
    assert any(".visual.merger." in n for n in names)
    assert not any("base_layer" in n for n in names)  # LLM base weights stay frozen
    factors = lora_factors(peft_model)
    # q, k, v, o, gate, up, down in both layers of the tiny LLM, nothing in the vision tower or the head
    assert len(factors) == 14 and all("language_model.layers." in m for m in factors)
    assert {g["name"] for g in groups} == {"lora_head", "merger", "embedding"}
    a, b = next(iter(factors.values()))
    assert a.shape[0] == 4 and torch.count_nonzero(b) == 0  # peft init: B = 0, so training starts at the base


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    cfg = TrainableConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0)
    rm, plain, _ = _setup(cfg)
    checkpointed = copy.deepcopy(plain)
    backbone = checkpointed.base_model.model.model
    assert not any(getattr(m, "gradient_checkpointing", False) for m in backbone.modules())
    enable_activation_checkpointing(backbone)
    assert any(getattr(m, "gradient_checkpointing", False) for m in backbone.modules())
    losses, grads = [], []
    for model in (plain, checkpointed):
        loss = _step(model, rm)
        loss.backward()
        losses.append(loss.item())
        grads.append(model.base_model.model.rm_head.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert np.isfinite(losses[0])
