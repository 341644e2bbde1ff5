"""Training a VideoReward: the model to start from, the pair objective (one forward over [A; B], then BTT or BT),
accuracy on validation pairs, and the export (docs/numerics.md, Reward training recipe). The loop is the trainer's.
"""

from __future__ import annotations

from pathlib import Path

import torch


def build_model(cfg, dims: list[str]):
    """(model, tokenizer, RewardConfig) in float32, from init_from, tiny-random or a base Qwen2-VL. `cfg`: a
    TrainRewardConfig."""
    from videoalign.reward.model import (
        RANDOM_MODELS,
        RewardConfig,
        build_reward_model,
        build_tiny_random,
        load_base_backbone,
        load_tokenizer,
    )

    if cfg.init_from:
        from videoalign.reward.videoreward import VideoReward

        rm = VideoReward.from_pretrained(cfg.init_from, dtype="float32", device="cpu")
        if list(rm.config.dims) != list(dims):
            raise ValueError(f"init_from {cfg.init_from} has dims {rm.config.dims} but the data has {dims}; "
                             "set dims to match the checkpoint")
        rm.config.lora, rm.config.normalization = cfg.trainable.lora_dict(), None
        return rm.model, rm.tokenizer, rm.config
    template = cfg.template
    if template == "auto":
        template = "detailed_special" if list(dims) == ["VQ", "MQ", "TA"] else "generic"
    config = RewardConfig(dims=list(dims), output_dim=cfg.output_dim or len(dims), fps=cfg.fps,
                          num_frames=cfg.num_frames, max_pixels=cfg.max_pixels, min_pixels=cfg.min_pixels,
                          template_type=template, base_model=cfg.base_model, lora=cfg.trainable.lora_dict())
    if cfg.base_model in RANDOM_MODELS:
        model, tokenizer, config = build_tiny_random(seed=cfg.seed, config=config, name=cfg.base_model)
        config.note = None
        return model, tokenizer, config
    torch.manual_seed(cfg.seed)  # the reward head's init
    tokenizer = load_tokenizer(cfg.base_model)
    model = build_reward_model(load_base_backbone(cfg.base_model, torch.float32), tokenizer, config)
    return model, tokenizer, config


def prepare_pair(rm, pair, fps: float | None, num_frames: int | None):
    """Both videos of a pair, decoded and tokenised (runs in prefetch threads). With a fixed num_frames, a video
    the pair file says is shorter takes its own frame count."""
    frames = [None, None]
    if num_frames is not None:
        frames = [min(num_frames, n) if n else num_frames for n in (pair.num_frames_a, pair.num_frames_b)]
    fps = None if num_frames is not None else fps
    return (rm.prepare(pair.path_a, pair.prompt, fps=fps, num_frames=frames[0]),
            rm.prepare(pair.path_b, pair.prompt, fps=fps, num_frames=frames[1]))


def pair_loss(model, rm, prepared, labels, loss: str, theta: float, reduction: str, device):
    """Loss of a micro-batch: one forward over the [A; B] rows `prepared` (2b of them), then the pairwise loss on
    (r_A, r_B) (b, D) against labels (b, D)."""
    from videoalign.losses import bt_loss, btt_loss, reduce_loss

    inputs = rm.inputs.collate([p.tokens for p in prepared], [p.pixels for p in prepared])
    rewards = model(**{k: v.to(device) for k, v in inputs.items()})  # (2b, D)
    b = len(labels)
    r_a, r_b = rewards[:b], rewards[b:]
    labels = torch.tensor(labels, dtype=torch.long, device=device)
    per_entry, mask = btt_loss(r_a, r_b, labels, theta=theta) if loss == "btt" else bt_loss(r_a, r_b, labels)
    return reduce_loss(per_entry, mask, reduction)


def accuracy(rm, pairs, dims: list[str], batch_size: int, num_workers: int) -> dict:
    """Accuracy with and without ties per dimension on validation pairs (each video scored once, raw scores;
    masked labels left out). A tie threshold that is not finite is null with a note (docs/formats.md)."""
    from videoalign import metrics
    from videoalign.labels import INVALID

    videos = {}
    for p in pairs:
        videos.setdefault(str(p.path_a), p.prompt)
        videos.setdefault(str(p.path_b), p.prompt)
    was_training = rm.model.training
    rm.model.eval()
    records = dict(zip(videos, rm.score(list(videos), list(videos.values()), batch_size=batch_size,
                                        num_workers=num_workers, raw=True)))
    rm.model.train(was_training)
    out = {}
    for dim in dims:
        human, margin = [], []
        for p in pairs:
            a, b = records[str(p.path_a)], records[str(p.path_b)]
            if "error" in a or "error" in b or p.labels.get(dim, INVALID) == INVALID:
                continue
            human.append(float(p.labels[dim]))
            margin.append(a["raw"][dim] - b["raw"][dim])
        if human:
            out[dim] = metrics.accuracy_figures(human, margin)
    return out


def export(peft_model, tokenizer, rconfig, trainable, out: Path, step: int, reference_layout: bool) -> None:
    """final/ (ours: the LoRA merged into the weights) and, with reference_layout, final_reference/ in the released
    layout (written first: it needs the unmerged LoRA)."""
    from videoalign.reward.trainable import lora_factors
    from videoalign.reward.videoreward import VideoReward

    factors = lora_factors(peft_model)
    base = peft_model.unload()  # plain model, base weights, LoRA removed
    if reference_layout:
        from videoalign.reward.layouts import save_reference

        save_reference(base, tokenizer, rconfig, out / "final_reference", layout="full", step=step,
                       lora_state=factors)
    scale = trainable.lora_alpha / trainable.lora_r
    modules = dict(base.named_modules())
    with torch.no_grad():
        for name, (a, b) in factors.items():
            modules[name].weight += scale * (b @ a).to(modules[name].weight.device)
    VideoReward(base, tokenizer, rconfig).save_pretrained(out / "final")
