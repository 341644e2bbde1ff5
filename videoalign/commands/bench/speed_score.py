"""`videoalign bench ...`: benchmarks that write their figures as JSON.

`bench speed score` measures, in one run and on the same videos: the time to only decode, resize and
patchify them (through the same prefetching threads), the time to score them end to end, their ratio, clips/s
and the process's peak RSS. A ratio near 1 means the model hides behind decoding (or vice versa).

1 process: videoalign bench speed score --csv videos.csv --model tiny-random --output bench_score.json
"""

from __future__ import annotations

import json
import platform
import resource
import time
from dataclasses import dataclass
from typing import Literal


@dataclass
class SpeedScoreConfig:
    #: videos to score: a video,prompt CSV or a pair-label CSV
    csv: str = "../shared/data/videoalign_examples/example.csv"
    #: JSON file for the figures (printed as well)
    output: str | None = None
    #: model to time: tiny-random, a checkpoint folder or a hub id
    model: str = "tiny-random"
    #: base Qwen2-VL for reference-layout checkpoints
    base_model: str | None = None
    #: compute dtype
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: device
    device: str = "auto"
    #: videos per forward pass
    batch_size: int = 8
    #: decoding threads
    num_workers: int = 2

    def __post_init__(self):
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("batch_size must be >= 1 and num_workers >= 0")


def report(figures: dict, output: str | None) -> None:
    """Print the figures, plus where they were measured (threads, host, python, torch), as JSON and, when `output`
    is set, write them there atomically."""
    import torch

    from videoalign.data import write_atomic
    from videoalign.log import console, stdout

    figures = {**figures, "torch_threads": torch.get_num_threads(), "host": platform.node(),
               "python": platform.python_version(), "torch": torch.__version__}
    text = json.dumps(figures, indent=2)
    if output:
        write_atomic(output, text + "\n")
        console.print(f"wrote {output}", highlight=False)
    stdout.print(text, markup=False, highlight=False)


def peak_rss_mb() -> float:
    """Peak resident set size of this process (threads included), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_speed_score(cfg: SpeedScoreConfig) -> int:
    import torch

    from videoalign.data import prefetch, read_score_csv
    from videoalign.reward.videoreward import VideoReward

    items = [it for it in read_score_csv(cfg.csv) if not it.error]
    if not items:
        raise ValueError(f"{cfg.csv}: no videos to benchmark")
    start = time.perf_counter()
    rm = VideoReward.from_pretrained(cfg.model, base_model=cfg.base_model, dtype=cfg.dtype, device=cfg.device)
    load_s = time.perf_counter() - start
    ahead = max(2 * cfg.batch_size, cfg.num_workers)

    # 1. Warm-up: the first readable clip through decode and the model, so neither timing pays one-off costs.
    for item in items:
        try:
            warm = rm.prepare(item.path, item.prompt)
        except ValueError:
            continue  # counted as failed below, wherever it is in the list
        rm.score_prepared([warm])
        break
    else:
        raise ValueError(f"{cfg.csv}: none of the {len(items)} videos can be read; nothing to benchmark")
    _sync(rm.device)

    # 2. Decode + resize + patchify + tokenise only, through the same prefetching threads.
    start = time.perf_counter()
    failures = 0
    for _, result in prefetch(lambda it: rm.prepare(it.path, it.prompt), items, cfg.num_workers, ahead):
        failures += isinstance(result, Exception)
    decode_s = time.perf_counter() - start

    # 3. End-to-end scoring of the same videos.
    start = time.perf_counter()
    scored = 0
    for chunk in rm.iter_scores([(it, it.prompt) for it in items], batch_size=cfg.batch_size,
                                num_workers=cfg.num_workers):
        scored += sum(1 for _, r in chunk if "error" not in r)
    _sync(rm.device)
    score_s = time.perf_counter() - start

    figures = {
        "benchmark": "speed/score",
        "model": cfg.model,
        "clips": len(items),
        "scored": scored,
        "failed": failures,
        "batch_size": cfg.batch_size,
        "num_workers": cfg.num_workers,
        "dtype": str(next(rm.model.parameters()).dtype).replace("torch.", ""),
        "device": str(rm.device),
        "load_s": round(load_s, 3),
        "decode_resize_s": round(decode_s, 3),
        "score_s": round(score_s, 3),
        "clips_per_s": round(scored / score_s, 3),
        "score_over_decode": round(score_s / decode_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if rm.device.type == "cuda" else None,
    }
    report(figures, cfg.output)
    return 0


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class SpeedRelabelConfig:
    #: pairs or manifest to relabel (default: the shared example pairs)
    input: str = "../shared/data/videoalign_examples/example.csv"
    #: JSON file for the figures (printed as well)
    output: str | None = None
    #: model to time
    model: str = "tiny-random"
    #: compute dtype
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: device
    device: str = "auto"
    #: videos per forward pass
    batch_size: int = 2
    #: decoding threads
    num_workers: int = 2


def run_speed_relabel(cfg: SpeedRelabelConfig) -> int:
    """Time a cold `relabel` (no score cache) end to end in a temporary folder: pairs/s and videos/s."""
    import tempfile
    from pathlib import Path

    import torch

    from videoalign.commands.relabel import RelabelConfig
    from videoalign.commands.relabel import run as run_relabel
    from videoalign.data import read_jsonl

    with tempfile.TemporaryDirectory(prefix="videoalign-bench-") as tmp:
        out = str(Path(tmp) / "pairs.jsonl")
        relabel_cfg = RelabelConfig(input=cfg.input, output=out, model=cfg.model, dtype=cfg.dtype,
                                    device=cfg.device, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
        start = time.perf_counter()
        code = run_relabel(relabel_cfg)
        total_s = time.perf_counter() - start
        lines = read_jsonl(out)
        videos = len(read_jsonl(relabel_cfg.cache_path()))
    pairs = sum(1 for x in lines if "chosen" in x)
    figures = {
        "benchmark": "speed/relabel",
        "model": cfg.model,
        "input": cfg.input,
        "videos": videos,
        "pairs": pairs,
        "failed": sum(1 for x in lines if "error" in x),
        "batch_size": cfg.batch_size,
        "num_workers": cfg.num_workers,
        "total_s": round(total_s, 3),
        "videos_per_s": round(videos / total_s, 3),
        "pairs_per_s": round(pairs / total_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    report(figures, cfg.output)
    return code


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


def run_speed_train_reward(cfg: SpeedTrainRewardConfig) -> int:
    """Time optimiser steps of `train-reward` from its own metrics.jsonl timestamps: pairs/s after warm-up."""
    import tempfile
    from pathlib import Path

    import torch

    from videoalign.commands.train_reward import TrainRewardConfig
    from videoalign.commands.train_reward import run as run_train
    from videoalign.data import read_jsonl
    from videoalign.reward.trainable import TrainableConfig

    with tempfile.TemporaryDirectory(prefix="videoalign-bench-") as tmp:
        train_cfg = TrainRewardConfig(
            train_csv=cfg.train_csv, output_dir=tmp, base_model=cfg.base_model, max_steps=cfg.steps,
            batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, gradient_checkpointing=cfg.gradient_checkpointing,
            max_pixels=cfg.max_pixels, min_pixels=min(cfg.max_pixels, 128 * 28 * 28), device=cfg.device,
            warmup_ratio=0.0, trainable=TrainableConfig(lora_dropout=0.0))
        start = time.perf_counter()
        run_train(train_cfg)
        total_s = time.perf_counter() - start
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
