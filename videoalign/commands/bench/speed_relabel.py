"""`videoalign bench speed relabel`: the speed of a cold `videoalign relabel` (no score cache), run end to end in a
temporary folder through the CLI in this process: videos/s, pairs/s, peak RSS.

1 process: videoalign bench speed relabel --model tiny-random --output bench_relabel.json
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal


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


def run(cfg: SpeedRelabelConfig) -> int:
    import tempfile
    from pathlib import Path

    from videoalign.benchmark import peak_rss_mb, report
    from videoalign.cli.base import run_cli
    from videoalign.data import read_jsonl

    with tempfile.TemporaryDirectory(prefix="videoalign-bench-") as tmp:
        out = Path(tmp) / "pairs.jsonl"
        argv = ["relabel", cfg.input, "--output", out, "--model", cfg.model, "--dtype", cfg.dtype,
                "--device", cfg.device, "--batch-size", cfg.batch_size, "--num-workers", cfg.num_workers]
        start = time.perf_counter()
        code = run_cli(argv)
        total_s = time.perf_counter() - start
        lines = read_jsonl(out)
        videos = len(read_jsonl(Path(f"{out}.scores.jsonl")))
    if code == 2:
        raise ValueError(f"relabel refused the benchmark's input {cfg.input} (its error is above)")
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
