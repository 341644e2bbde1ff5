"""`videoalign train-reward`: train a multi-dimension VideoReward with the Bradley-Terry-with-ties loss.

Starts from a base Qwen2-VL (hub id, folder or tiny-random) or fine-tunes an existing VideoReward checkpoint
(`init_from`, any layout). The reference recipe is the default (docs/numerics.md, Reward training recipe): LoRA
r 64 / alpha 128 on the language model, vision tower and merger trained, only the reward tokens' embedding rows,
AdamW with warm-up then a constant rate, fp32 master weights with bf16 autocast on GPU. The pairs are a pair CSV
or relabel's pairs JSONL (labels.read_pairs); the loop, data order and resume are the trainer's.

1 GPU:  videoalign train-reward --recipe recipes/train_reward/videoreward_2b.yaml
N GPUs: accelerate launch --num_processes N -m videoalign train-reward --recipe recipes/train_reward/videoreward_2b.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from videoalign.reward.settings import TrainableConfig
from videoalign.trainer import TrainingConfig


@dataclass
class TrainRewardConfig(TrainingConfig):
    #: training pairs: a pair CSV (path_A,path_B,prompt,<one label column per dimension>) or relabel's pairs JSONL
    train_csv: str | None = None
    #: validation pairs in the same formats, evaluated every eval_every steps and at the end
    val_csv: str | None = None
    #: folder the pair files' video paths are relative to (default: each file's folder)
    videos_root: str | None = None
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
    grad_accum: int = 4
    epochs: int = 2
    #: linear warm-up over this fraction of the steps, then constant
    warmup_ratio: float = 0.05
    max_grad_norm: float | None = None
    #: bf16 autocast over fp32 master weights; auto = bf16 on GPU, none on CPU
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    #: evaluate on val_csv every this many steps (0 = only at the end)
    eval_every: int = 0
    #: also export the final model in the reference layout (output_dir/final_reference)
    export_layout: Literal["native", "reference"] = "native"

    def __post_init__(self):
        super().__post_init__()
        if not self.train_csv:
            raise ValueError("train_csv is required: a pair CSV with path_A,path_B,prompt and label columns, or "
                             "relabel's pairs JSONL")
        if self.fps is not None and self.num_frames is not None:
            raise ValueError("fps and num_frames are exclusive: set one to null")
        if self.theta <= 1:
            raise ValueError(f"theta must be > 1, got {self.theta}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0 = only at the end), got {self.eval_every}")


def run(cfg: TrainRewardConfig) -> int:
    """Train; exit code 0. Rank 0 logs, writes metrics.jsonl, checkpoints and the final model."""
    import torch
    from transformers import get_constant_schedule_with_warmup

    from videoalign.config import write_resolved
    from videoalign.distributed import make_accelerator
    from videoalign.labels import read_pairs
    from videoalign.log import console
    from videoalign.reward import training
    from videoalign.reward.trainable import enable_activation_checkpointing, wrap_for_training
    from videoalign.reward.videoreward import VideoReward
    from videoalign.trainer import Objective, Trainer, check_output_dir, report_data

    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and cfg.device != "cpu" else "no"
    accelerator = make_accelerator(cfg.device, mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum)
    main, world, out = accelerator.is_main_process, accelerator.num_processes, Path(cfg.output_dir)
    check_output_dir(cfg, accelerator)

    # 1. Data: bad rows are reported with their line number and skipped.
    found = read_pairs(cfg.train_csv, cfg.videos_root, cfg.dims)
    dims, pairs = found.dims, found.pairs
    val_pairs = read_pairs(cfg.val_csv, cfg.videos_root, dims).pairs if cfg.val_csv else []
    write_resolved(cfg, out / "resolved_recipe.yaml", main)
    total_steps = report_data(cfg, "training pairs", pairs, found.problems, world, main, cfg.train_csv,
                              found.note(), f", dims {','.join(dims)}")

    # 2. Model, trainable parameters, optimiser, schedule.
    model, tokenizer, rconfig = training.build_model(cfg, dims)
    rm = VideoReward(model, tokenizer, rconfig)  # prepare()/score() for the data; it shares the model
    torch.manual_seed(cfg.seed)  # LoRA A init: identical on every rank and run
    peft_model, groups = wrap_for_training(model, cfg.trainable, rm.inputs.reward_token_ids)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model.model)
    peft_model.train()
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    scheduler = get_constant_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps))
    # The scheduler is not prepared: accelerate would step it once per process; the trainer steps it once per step.
    ddp_model, optimizer = accelerator.prepare(peft_model, optimizer)
    rm.model = peft_model.base_model.model  # eval/score through the live (LoRA-wrapped) weights

    # 3. The objective, the validation accuracy and the export, for the trainer.
    def prepare(batch):  # in the reading threads: [(pair, (video A, video B) decoded and tokenised)]
        return [(p, training.prepare_pair(rm, p, cfg.fps, cfg.num_frames)) for p in batch]

    def loss(prepared, _step, _positions, _step_items):
        flat = [videos[0] for _, videos in prepared] + [videos[1] for _, videos in prepared]
        labels = [pair.dim_labels(dims) for pair, _ in prepared]
        return training.pair_loss(ddp_model, rm, flat, labels, cfg.loss, cfg.theta, cfg.reduction,
                                  accelerator.device), {}

    def evaluate(step: int, final: bool):
        if main and val_pairs:
            return {"eval": training.accuracy(rm, val_pairs, dims, cfg.batch_size * 2, cfg.num_workers)}
        return None

    def finish():
        if main:
            training.export(peft_model, tokenizer, rconfig, cfg.trainable, out, total_steps,
                            cfg.export_layout == "reference")
            console.print(f"saved {out / 'final'}" + (f" and {out / 'final_reference'}"
                                                     if cfg.export_layout == "reference" else ""), highlight=False)

    objective = Objective("pair", pairs, loss, prepare=prepare)
    Trainer(cfg, accelerator, objective, ddp_model, peft_model, optimizer, scheduler,
            evaluate=evaluate if cfg.val_csv else None, eval_every=cfg.eval_every, finish=finish).fit()
    return 0
