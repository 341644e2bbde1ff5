"""`videoalign bench speed score`: the speed of `score`, in one run on the same videos: the time to only decode, resize
and patchify them (through the same prefetching threads), the time to score them end to end, their ratio, clips/s
and the process's peak RSS. A ratio near 1 means the model hides behind decoding (or vice versa).

1 process: videoalign bench speed score --csv videos.csv --model tiny-random --output bench_score.json
1 GPU:     videoalign bench speed score --recipe recipes/bench/speed_score.yaml --output bench_score.json
"""

from __future__ import annotations

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


def run(cfg: SpeedScoreConfig) -> int:
    import torch

    from videoalign.benchmark import peak_rss_mb, report, sync
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
    sync(rm.device)

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
    sync(rm.device)
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
