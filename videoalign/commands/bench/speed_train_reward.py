"""`videoalign bench speed train-reward`: the speed of `videoalign train-reward` steps, from its own metrics.jsonl
timestamps, run through the CLI in this process in a temporary folder: pairs/s after the first step, peak memory.

1 process: videoalign bench speed train-reward --base-model tiny-random --output bench_train.json
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class SpeedTrainRewardConfig:
    #: training pairs (default: the shared example pairs)
    train_csv: str = "../shared/data/videoalign_examples/example.csv"
    #: JSON file for the figures (printed as well)
    output: str | None = None
    #: base model: tiny-random, a folder or a hub id (real-size timing needs a GPU)
    base_model: str = "tiny-random"
    #: optimiser steps to time (the first is a warm-up and not counted)
    steps: int = 6
    #: pairs per micro-step
    batch_size: int = 1
    #: micro-steps per optimiser step
    grad_accum: int = 2
    #: recompute activations in backward
    gradient_checkpointing: bool = False
    #: upper bound on resized frame area (448x448 = 200704 for the real recipe)
    max_pixels: int = 12544
    #: device
    device: str = "auto"


def run(cfg: SpeedTrainRewardConfig) -> int:
    import tempfile
    from pathlib import Path

    import torch

    from videoalign.benchmark import peak_rss_mb, report
    from videoalign.cli.base import run_cli
    from videoalign.data import read_jsonl

    with tempfile.TemporaryDirectory(prefix="videoalign-bench-") as tmp:
        argv = ["train-reward", "--train-csv", cfg.train_csv, "--output-dir", tmp, "--base-model", cfg.base_model,
                "--max-steps", cfg.steps, "--batch-size", cfg.batch_size, "--grad-accum", cfg.grad_accum,
                "--gradient-checkpointing" if cfg.gradient_checkpointing else "--no-gradient-checkpointing",
                "--max-pixels", cfg.max_pixels, "--min-pixels", min(cfg.max_pixels, 128 * 28 * 28),
                "--device", cfg.device, "--warmup-ratio", 0.0, "--trainable.lora-dropout", 0.0, "--overwrite"]
        start = time.perf_counter()
        code = run_cli(argv)
        total_s = time.perf_counter() - start
        if code:
            raise ValueError(f"train-reward failed on the benchmark's pairs {cfg.train_csv} (its error is above)")
        steps = [r for r in read_jsonl(Path(tmp) / "metrics.jsonl") if "loss" in r]
    timed = steps[1:]  # the first step pays one-off costs
    per_step = (timed[-1]["time"] - steps[0]["time"]) / len(timed) if timed else float("nan")
    pairs_per_step = cfg.batch_size * cfg.grad_accum
    figures = {
        "benchmark": "speed/train-reward",
        "base_model": cfg.base_model,
        "steps_timed": len(timed),
        "pairs_per_step": pairs_per_step,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "max_pixels": cfg.max_pixels,
        "step_s": round(per_step, 4),
        "pairs_per_s": round(pairs_per_step / per_step, 3),
        "samples_per_s": round(2 * pairs_per_step / per_step, 3),  # a pair is two videos
        "total_s": round(total_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
    }
    report(figures, cfg.output)
    return 0
