"""`videoalign train-reward`: train a multi-dimension VideoReward with the Bradley-Terry-with-ties loss.

Starts from a base Qwen2-VL (hub id, folder or tiny-random) or fine-tunes an existing VideoReward checkpoint
(`init_from`, any layout). The reference recipe is the default (REFERENCE.md section 8): LoRA r 64 / alpha 128
on the language model, vision tower and merger trained, only the reward tokens' embedding rows, AdamW with
warm-up then a constant rate, fp32 master weights with bf16 autocast on GPU.

Data order: epoch e visits the pairs in `randperm(N, seed + e)`; optimiser step s takes the next global batch
of batch_size x grad_accum x world pairs and rank r takes every world-th of them. So the step alone is the data
position, and 1 process with batch 2 and 2 processes with batch 1 see the same pairs per step.

1 GPU:  videoalign train-reward --recipe recipes/train_reward/videoreward_2b.yaml
N GPUs: accelerate launch --num_processes N -m videoalign train-reward --recipe recipes/train_reward/videoreward_2b.yaml
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from videoalign.config import config_to_dict
from videoalign.reward.trainable import TrainableConfig



@dataclass
class TrainRewardConfig:
    #: training pairs: path_A,path_B,prompt,<one label column per dimension> (labels A, B, same, invalid)
    train_csv: str | None = None
    #: validation pairs in the same format, evaluated every eval_every steps
    val_csv: str | None = None
    #: folder the CSVs' video paths are relative to (default: each CSV's folder)
    videos_root: str | None = None
    #: where metrics.jsonl, checkpoints/ and final/ go
    output_dir: str = "runs/train_reward"
    #: dimensions (label columns) to train; default: every label column of train_csv
    dims: list[str] | None = None
    #: base Qwen2-VL to start from: hub id, folder or tiny-random
    base_model: str = "Qwen/Qwen2-VL-2B-Instruct"
    #: fine-tune this VideoReward checkpoint (hub id or folder, any layout) instead of starting from the base
    init_from: str | None = None
    #: reward head width: 1 = one head shared by the reward tokens (released), or len(dims)
    output_dim: int | None = None
    #: rubric: detailed_special (the released, VQ/MQ/TA only), generic (any dims), or auto
    template: Literal["auto", "detailed_special", "generic"] = "auto"
    #: frames per second sampled from each video
    fps: float | None = 2.0
    #: fixed frame count instead of fps (then min(num_frames, the CSV's num_frames_A/B))
    num_frames: int | None = None
    #: upper bound on the resized frame area
    max_pixels: int = 200704
    #: lower bound on the resized frame area
    min_pixels: int = 128 * 28 * 28
    #: pairwise loss: btt (Rao-Kupper with ties, released) or bt (ties masked)
    loss: Literal["btt", "bt"] = "btt"
    #: BTT tie parameter theta
    theta: float = 5.0
    #: compat = mean over all B x D entries, masked ones included (reference); masked_mean = over valid ones
    reduction: Literal["compat", "masked_mean"] = "compat"
    #: what trains and the learning rates
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    #: pairs per process per micro-step
    batch_size: int = 1
    #: micro-steps per optimiser step
    grad_accum: int = 4
    #: passes over the training pairs (ignored when max_steps is set)
    epochs: int = 2
    #: stop after this many optimiser steps
    max_steps: int | None = None
    #: linear warm-up over this fraction of the steps, then constant
    warmup_ratio: float = 0.05
    #: clip the global gradient norm (the reference does not clip)
    max_grad_norm: float | None = None
    #: bf16 autocast over fp32 master weights; auto = bf16 on GPU, none on CPU
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    #: recompute activations in backward to save memory
    gradient_checkpointing: bool = False
    #: evaluate on val_csv every this many steps (0 = only at the end)
    eval_every: int = 0
    #: write a resumable checkpoint every this many steps (0 = never)
    save_every: int = 0
    #: log a metrics line every this many steps
    log_every: int = 1
    #: seed of the data order and of the head/LoRA initialisation
    seed: int = 42
    #: decoding threads
    num_workers: int = 2
    #: auto, cpu or cuda
    device: str = "auto"
    #: continue from the newest checkpoint in output_dir
    resume: bool = False
    #: also export the final model in the reference layout (output_dir/final_reference)
    export_layout: Literal["native", "reference"] = "native"

    def __post_init__(self):
        if not self.train_csv:
            raise ValueError("train_csv is required: a pair CSV with path_A,path_B,prompt and label columns")
        for name in ("batch_size", "grad_accum", "epochs", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.fps is not None and self.num_frames is not None:
            raise ValueError("fps and num_frames are exclusive: set one to null")
        if self.theta <= 1:
            raise ValueError(f"theta must be > 1, got {self.theta}")


def build_model(cfg: TrainRewardConfig, dims: list[str]):
    """(model, tokenizer, RewardConfig) in float32, from init_from, tiny-random or a base Qwen2-VL."""
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


def step_indices(step: int, n: int, global_batch: int, seed: int) -> list[int]:
    """The global batch of optimiser step `step` (0-based): epoch-wise seeded permutations, last partial batch
    of each epoch dropped."""
    per_epoch = n // global_batch
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return order[offset * global_batch:(offset + 1) * global_batch]


def prepare_pair(rm, pair, cfg: TrainRewardConfig):
    """Both videos of a pair, decoded and tokenised (runs in prefetch threads)."""
    frames = [None, None]
    if cfg.num_frames is not None:
        frames = [min(cfg.num_frames, n) if n else cfg.num_frames for n in (pair.num_frames_a, pair.num_frames_b)]
    fps = None if cfg.num_frames is not None else cfg.fps
    return (rm.prepare(pair.path_a, pair.prompt, fps=fps, num_frames=frames[0]),
            rm.prepare(pair.path_b, pair.prompt, fps=fps, num_frames=frames[1]))


def pair_loss(model, rm, prepared, labels, cfg: TrainRewardConfig, device):
    """Loss of a micro-batch: one forward over [A; B] rows, then the pairwise loss on (r_A, r_B)."""
    from videoalign.losses import bt_loss, btt_loss, reduce_loss

    inputs = rm.inputs.collate([p.tokens for p in prepared], [p.pixels for p in prepared])
    rewards = model(**{k: v.to(device) for k, v in inputs.items()})  # (2b, D)
    b = len(labels)
    r_a, r_b = rewards[:b], rewards[b:]
    labels = torch.tensor(labels, dtype=torch.long, device=device)
    if cfg.loss == "btt":
        loss, mask = btt_loss(r_a, r_b, labels, theta=cfg.theta)
    else:
        loss, mask = bt_loss(r_a, r_b, labels)
    return reduce_loss(loss, mask, cfg.reduction)


def evaluate(rm, pairs, dims, cfg: TrainRewardConfig) -> dict:
    """Accuracy with and without ties per dimension on validation pairs (each video scored once)."""
    from videoalign import metrics

    videos = {}
    for p in pairs:
        videos.setdefault(str(p.path_a), p.prompt)
        videos.setdefault(str(p.path_b), p.prompt)
    was_training = rm.model.training
    rm.model.eval()
    records = dict(zip(videos, rm.score(list(videos), list(videos.values()), batch_size=cfg.batch_size * 2,
                                        num_workers=cfg.num_workers, raw=True)))
    rm.model.train(was_training)
    out = {}
    for k, dim in enumerate(dims):
        human, margin = [], []
        for p in pairs:
            a, b = records[str(p.path_a)], records[str(p.path_b)]
            if "error" in a or "error" in b or p.labels[k] == 22:
                continue
            human.append(float(p.labels[k]))
            margin.append(a["raw"][dim] - b["raw"][dim])
        if human:
            tied = metrics.accuracy_with_ties(human, margin)
            out[dim] = {"accuracy_without_ties": metrics.accuracy_without_ties(human, margin),
                        "accuracy_with_ties": tied.accuracy, "tie_threshold": tied.threshold, "pairs": len(human)}
    return out


def run(cfg: TrainRewardConfig) -> int:
    """Train; exit code 0. Rank 0 logs, writes metrics.jsonl, checkpoints and the final model."""
    import yaml
    from transformers import get_constant_schedule_with_warmup

    from videoalign import checkpoint
    from videoalign.data import prefetch, read_train_pairs, write_atomic
    from videoalign.distributed import make_accelerator
    from videoalign.log import console, progress
    from videoalign.reward.videoreward import VideoReward
    from videoalign.reward.trainable import (
        enable_activation_checkpointing,
        lora_factors,
        trainable_state,
        wrap_for_training,
    )

    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and cfg.device != "cpu" else "no"
    accelerator = make_accelerator(cfg.device, mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    out = Path(cfg.output_dir)
    metrics_path = out / "metrics.jsonl"

    # 1. Data: bad rows are reported with their row number and skipped.
    dims, pairs, problems = read_train_pairs(cfg.train_csv, cfg.dims, cfg.videos_root)
    val_pairs = read_train_pairs(cfg.val_csv, dims, cfg.videos_root)[1] if cfg.val_csv else []
    global_batch = cfg.batch_size * cfg.grad_accum * world
    if len(pairs) < global_batch:
        raise ValueError(f"{cfg.train_csv}: {len(pairs)} usable pairs, fewer than one global batch "
                         f"({cfg.batch_size} x {cfg.grad_accum} x {world} processes)")
    total_steps = cfg.max_steps or cfg.epochs * (len(pairs) // global_batch)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "resolved_recipe.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        for problem in problems:
            console.print(f"[yellow]skipped:[/] {problem}", highlight=False)
        console.print(f"{len(pairs)} training pairs ({len(problems)} skipped), dims {','.join(dims)}, "
                      f"{total_steps} steps of {global_batch} pairs on {world} process(es)", highlight=False)

    # 2. Model, trainable parameters, optimiser, schedule.
    model, tokenizer, rconfig = build_model(cfg, dims)
    rm = VideoReward(model, tokenizer, rconfig)  # prepare()/score() for the data; it shares the model
    torch.manual_seed(cfg.seed)  # LoRA A init: identical on every rank and run
    peft_model, groups = wrap_for_training(model, cfg.trainable, rm.inputs.reward_token_ids)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model.model)
    peft_model.train()
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    scheduler = get_constant_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps))
    # The scheduler is not prepared: accelerate would step it once per process, so 1 and N processes would
    # follow different schedules. It steps once per optimiser step, below.
    ddp_model, optimizer = accelerator.prepare(peft_model, optimizer)
    device = accelerator.device
    rm.model = peft_model.base_model.model  # eval/score through the live (LoRA-wrapped) weights

    start_step = 0
    if cfg.resume and (last := checkpoint.latest(out)) is not None:
        state = checkpoint.load(last, peft_model, optimizer.optimizer, scheduler, rank)
        start_step = state["step"]
        if main:
            console.print(f"resumed from {last} at step {start_step}", highlight=False)

    # 3. Loop: each step = grad_accum micro-steps of batch_size pairs on every rank.
    def micro_batches(step):
        mine = step_indices(step, len(pairs), global_batch, cfg.seed)[rank::world]
        return [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]

    def work(job):
        step, batch = job
        return [prepare_pair(rm, pairs[i], cfg) for i in batch]

    jobs = ((s, b) for s in range(start_step, total_steps) for b in micro_batches(s))
    losses: list[float] = []
    with progress(total_steps - start_step, "training", enabled=main) as bar:
        for (step, batch), prepared in prefetch(work, jobs, cfg.num_workers, ahead=2 * cfg.grad_accum):
            if isinstance(prepared, Exception):
                raise ValueError(f"step {step}: cannot read a training video ({prepared}); fix or drop that row")
            with accelerator.accumulate(ddp_model):
                with accelerator.autocast():
                    flat = [p[0] for p in prepared] + [p[1] for p in prepared]
                    loss = pair_loss(ddp_model, rm, flat, [pairs[i].labels for i in batch], cfg, device)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(peft_model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            step_loss = accelerator.gather(torch.stack(losses).mean().reshape(1)).mean().item()
            losses = []
            done = step + 1
            bar.advance(1)
            record = {"step": done, "loss": step_loss, "lr": scheduler.get_last_lr()[0]}
            if cfg.val_csv and cfg.eval_every and done % cfg.eval_every == 0 and main:
                record["eval"] = evaluate(rm, val_pairs, dims, cfg)
            if main and (done % cfg.log_every == 0 or "eval" in record):
                write_metrics(metrics_path, record)
            if cfg.save_every and done % cfg.save_every == 0:
                checkpoint.save(out, done, trainable_state(peft_model), optimizer.optimizer, scheduler,
                                {"dims": dims}, rank, world, accelerator.wait_for_everyone)
            accelerator.wait_for_everyone()

    # 4. Final: evaluate, export (reference layout first: it needs the unmerged LoRA), merge, save ours.
    accelerator.wait_for_everyone()
    if main:
        if val_pairs:
            write_metrics(metrics_path, {"step": total_steps, "final": True, "eval": evaluate(rm, val_pairs, dims, cfg)})
        factors = lora_factors(peft_model)
        base = peft_model.unload()  # plain model, base weights, LoRA removed
        if cfg.export_layout == "reference":
            from videoalign.reward.layouts import save_reference

            save_reference(base, tokenizer, rconfig, out / "final_reference", layout="full", step=total_steps,
                           lora_state=factors)
        scale = cfg.trainable.lora_alpha / cfg.trainable.lora_r
        modules = dict(base.named_modules())
        with torch.no_grad():
            for name, (a, b) in factors.items():
                modules[name].weight += scale * (b @ a).to(modules[name].weight.device)
        VideoReward(base, tokenizer, rconfig).save_pretrained(out / "final")
        console.print(f"saved {out / 'final'}" + (f" and {out / 'final_reference'}" if cfg.export_layout == "reference"
                                                  else ""), highlight=False)
    accelerator.wait_for_everyone()
    return 0



def write_metrics(path: Path, record: dict) -> None:
    from videoalign.data import append_jsonl

    append_jsonl(path, [{"time": round(time.time(), 3), **record}])
