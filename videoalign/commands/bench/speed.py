"""`videoalign bench speed`: the speed benchmarks of score, relabel, train-reward, dpo and guide behind one command,
with their targets, one table, one JSON, and a gate for CI.

Each benchmark runs as its own `python -m videoalign bench speed <name> ... --output <dir>/<name>.json` process, so
peak RSS, threads and allocator state of one never leak into another; its log goes to <dir>/<name>.log. A benchmark
that fails is recorded (its last error line) and the others still run.

Modes (the argv each benchmark gets is in `plan`):
    --quick          tiny models on the CPU, the debug recipes: under five minutes on 2 cores (about 1.5)
    (default)        the same tiny setups with more timed repetitions, for steadier figures
    --device cuda    the real-size architectures with random weights: Qwen2-VL-2B (`qwen2-vl-2b-random`, bf16,
                     batch 8) for score / relabel / train-reward, Wan2.1-T2V-1.3B for dpo and guide
                     (recipes/bench/speed_*.yaml); no download needed

Targets come from the issues that introduced each benchmark; every check is a ratio measured within one run (or a
memory figure), never an absolute time, because shared machines are noisy. The gate: a check fails when its value
exceeds `gate`, which is target x (1 + margin) (margin 0.15 by default: timing ratios on a loaded 2-core machine
move by about +-10 % between runs), except for the two known misses of the DPO benchmark, whose targets the
prescribed design cannot meet together (see bench_dpo.py and the README); those are gated at a stated regression
bound instead, and the table marks them "miss (known)".

Outputs in output_dir: <name>.json and <name>.log per benchmark, suite.json (machine, versions, mode, margin, every
benchmark's figures, every check with value / target / gate / status), suite.md (the markdown table the README
quotes). Exit 0, or 1 when a benchmark failed or (with --gate) a check failed.

CI:    videoalign bench speed --quick --gate --output-dir bench-ci
1 GPU: videoalign bench speed --device cuda --output-dir bench-h100
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARKS = ("score", "relabel", "train-reward", "dpo", "guide")
EXAMPLES = "../shared/data/videoalign_examples/example.csv"
#: the project's recipes/ (the suite passes absolute recipe paths, so it runs from any folder)
RECIPES = Path(__file__).resolve().parents[3] / "recipes"


@dataclass(frozen=True)
class Check:
    """One gated figure: `figure` is a dotted path into the benchmark's JSON; lower is better."""

    benchmark: str
    figure: str
    target: float
    what: str
    #: fail above this instead of target x (1 + margin): only for a documented known miss, as a regression bound
    #: measured on the tiny CPU setup (on a GPU a known miss is reported, not gated)
    known_miss_gate: float | None = None
    #: the check applies on this device kind only (None: both)
    device: str | None = None

    def gate(self, margin: float, kind: str) -> float | None:
        if self.known_miss_gate is not None:
            return self.known_miss_gate if kind == "cpu" else None
        return self.target * (1 + margin)


CHECKS = (
    Check("score", "score_over_decode", 1.3, "score time / decode time"),
    Check("score", "peak_rss_mb", 2048.0, "peak RSS, MiB", device="cpu"),
    Check("dpo", "time_ratio", 0.9, "step time, ours / naive"),
    Check("dpo", "memory_ratio", 0.6, "peak memory, ours / naive", known_miss_gate=0.85),
    Check("dpo", "ours_split.time_ratio", 0.9, "step time, split / naive",
          known_miss_gate=1.6),
    Check("dpo", "ours_split.memory_ratio", 0.6, "peak memory, split / naive"),
    Check("guide", "time_ratio", 1.5, "step time, guided / unguided"),
)

#: the figures each benchmark shows in the table besides its checks
HEADLINES = {
    "score": ("clips_per_s",),
    "relabel": ("videos_per_s", "pairs_per_s", "peak_rss_mb"),
    "train-reward": ("pairs_per_s", "step_s", "peak_rss_mb", "peak_gpu_mb"),
    "dpo": ("ours.step_s", "naive.step_s", "ours.peak_mb", "naive.peak_mb"),
    "guide": ("unguided.step_s", "guided.step_s", "transformer_blocks", "k"),
}


@dataclass
class SpeedSuiteConfig:
    #: tiny models on the CPU with few repetitions: under five minutes on 2 cores
    quick: bool = False
    #: cpu: the tiny models; cuda: the real-size architectures with random weights (one GPU)
    device: str = "cpu"
    #: run only these benchmarks (default: all of score, relabel, train-reward, dpo, guide)
    only: list[str] = field(default_factory=list)
    #: where the per-benchmark JSON and logs, suite.json and suite.md go
    output_dir: str = "bench-speed"
    #: a check fails above target x (1 + margin)
    margin: float = 0.15
    #: exit 1 when a check fails (CI)
    gate: bool = False
    #: the pair CSV with the clips that score, relabel and train-reward read
    data: str = EXAMPLES

    def __post_init__(self):
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device: expected cpu, cuda or cuda:N, got {self.device!r}")
        if self.quick and self.device != "cpu":
            raise ValueError("quick runs the tiny models on the CPU; drop --quick with --device cuda")
        unknown = [b for b in self.only if b not in BENCHMARKS]
        if unknown:
            raise ValueError(f"only: unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")


def plan(cfg: SpeedSuiteConfig) -> dict[str, list[str]]:
    """argv (after `videoalign bench speed <name>`) of each benchmark to run, in order."""
    data, debug, real = cfg.data, RECIPES / "debug", RECIPES / "bench"
    if cfg.device == "cpu":
        more = not cfg.quick  # the full CPU run repeats more for steadier medians
        argv = {
            "score": ["--recipe", str(debug / "bench_speed_score.yaml"), "--csv", data],
            "relabel": ["--input", data, "--model", "tiny-random", "--dtype", "float32", "--device", "cpu"],
            "train-reward": ["--train-csv", data, "--base-model", "tiny-random", "--device", "cpu",
                             "--steps", "12" if more else "6"],
            "dpo": ["--recipe", str(debug / "bench_speed_dpo.yaml"), "--steps", "40" if more else "20"],
            "guide": ["--recipe", str(debug / "bench_speed_guide.yaml"), "--repeats", "8" if more else "4"],
        }
    else:
        device = cfg.device
        model = ["--model", "qwen2-vl-2b-random", "--dtype", "bfloat16", "--device", device, "--batch-size", "8"]
        argv = {
            "score": ["--csv", data, *model, "--num-workers", "8"],
            "relabel": ["--input", data, *model, "--num-workers", "8"],
            "train-reward": ["--train-csv", data, "--base-model", "qwen2-vl-2b-random", "--device", device,
                             "--max-pixels", str(448 * 448), "--gradient-checkpointing"],
            "dpo": ["--recipe", str(real / "speed_dpo.yaml"), "--device", device],
            "guide": ["--recipe", str(real / "speed_guide.yaml"), "--device", device],
        }
    chosen = cfg.only or list(BENCHMARKS)
    return {name: argv[name] for name in BENCHMARKS if name in chosen}


def lookup(figures: dict, dotted: str):
    """figures["a"]["b"] for "a.b"; None when a key is missing."""
    value = figures
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def evaluate(results: dict[str, dict | None], device: str, margin: float) -> list[dict]:
    """One row per check of the benchmarks that ran: value, target, gate and status (ok | miss (known) | FAIL)."""
    kind = "cpu" if device == "cpu" else "cuda"
    rows = []
    for check in CHECKS:
        if check.benchmark not in results or check.device not in (None, kind):
            continue
        figures = results[check.benchmark]
        value = None if figures is None else lookup(figures, check.figure)
        gate = check.gate(margin, kind)
        if value is None:
            status = "FAIL"  # the benchmark failed, or no longer writes the figure
        elif gate is not None and value > gate:
            status = "FAIL"
        elif value > check.target:
            status = "miss (known)" if check.known_miss_gate is not None else "ok (within margin)"
        else:
            status = "ok"
        rows.append({"benchmark": check.benchmark, "figure": check.figure, "what": check.what, "value": value,
                     "target": check.target, "gate": None if gate is None else round(gate, 4), "status": status,
                     "known_miss": check.known_miss_gate is not None})
    return rows


def machine() -> dict:
    """Where the figures were measured: host, CPU count, GPU, and the versions that matter."""
    import importlib.metadata as md
    import os

    import torch

    versions = {}
    for name in ("torch", "transformers", "diffusers", "peft", "accelerate", "videoalign"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": platform.node(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu, "python": platform.python_version(),
            "versions": versions}


def run_one(name: str, argv: list[str], out: Path) -> tuple[dict | None, str | None, float]:
    """Run one benchmark in its own process; (figures, error line, seconds)."""
    target = out / f"{name}.json"
    target.unlink(missing_ok=True)  # a stale file must not pass for this run's figures
    command = [sys.executable, "-m", "videoalign", "bench", "speed", name, *argv, "--output", str(target)]
    start = time.perf_counter()
    with open(out / f"{name}.log", "w", encoding="utf-8") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.perf_counter() - start
    if code == 0 and target.is_file():
        return json.loads(target.read_text()), None, seconds
    lines = [x for x in (out / f"{name}.log").read_text(encoding="utf-8").splitlines() if x.strip()]
    return None, f"exit {code}: {lines[-1] if lines else 'no output'} (see {out / (name + '.log')})", seconds


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(suite: dict) -> str:
    """The suite's table: one row per check, then one per headline figure."""
    lines = [f"Mode: {suite['mode']}; device: {suite['machine']['gpu'] or 'CPU'} ({suite['machine']['cpu_count']} "
             f"cores, {suite['machine']['torch_threads']} torch threads); torch {suite['machine']['versions']['torch']}"
             f"; margin {suite['margin']}; {suite['date']}.", "",
             "| benchmark | figure | value | target | gate | status |", "|---|---|---|---|---|---|"]
    for row in suite["checks"]:
        lines.append(f"| {row['benchmark']} | {row['what']} (`{row['figure']}`) | {_fmt(row['value'])} | "
                     f"<= {_fmt(row['target'])} | {_fmt(row['gate'])} | {row['status']} |")
    for name, figures in suite["benchmarks"].items():
        if figures is None:
            lines.append(f"| {name} | failed: {suite['errors'][name]} | | | | FAIL |")
            continue
        for key in HEADLINES[name]:
            value = lookup(figures, key)
            if value is not None:
                lines.append(f"| {name} | `{key}` | {_fmt(value)} | | | |")
    return "\n".join(lines) + "\n"


def print_table(suite: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from videoalign.log import stdout

    table = Table(title=f"videoalign bench speed ({suite['mode']})")
    for col in ("benchmark", "figure", "value", "target", "gate", "status"):
        table.add_column(col, justify="right" if col in ("value", "target", "gate") else "left")
    for row in suite["checks"]:
        style = {"FAIL": "bold red", "miss (known)": "yellow"}.get(row["status"], "green")
        table.add_row(row["benchmark"], row["what"], _fmt(row["value"]), f"<= {_fmt(row['target'])}",
                      _fmt(row["gate"]), f"[{style}]{row['status']}[/{style}]")
    for name, figures in suite["benchmarks"].items():
        for key in HEADLINES[name] if figures else ():
            if lookup(figures, key) is not None:
                table.add_row(name, key, _fmt(lookup(figures, key)), "", "", "")
        if figures is None:
            table.add_row(name, suite["errors"][name], "", "", "", "[bold red]FAIL[/bold red]")
    # CI logs are not terminals: rich would wrap the table at 80 columns (print(width=) cannot exceed the console's)
    Console(width=max(stdout.width, 120), soft_wrap=True).print(table)


def run(cfg: SpeedSuiteConfig) -> int:
    import os

    from videoalign.data import write_atomic, write_json
    from videoalign.log import console

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("bench speed runs each benchmark in a process of its own; start it once, without "
                         "accelerate launch (the benchmarks are single-process by design)")
    if not RECIPES.is_dir():
        raise FileNotFoundError(f"{RECIPES}: the project's recipes/ folder is missing; install videoalign from a "
                                "clone (pip install -e .)")
    benchmarks = plan(cfg)
    if {"score", "relabel", "train-reward"} & set(benchmarks) and not Path(cfg.data).is_file():
        raise FileNotFoundError(f"{cfg.data}: no such pair CSV; run from the project root with ../shared/data beside "
                                "it, or pass --data")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if cfg.quick else ("cpu" if cfg.device == "cpu" else f"real-size ({cfg.device})")
    # 1. each benchmark in its own process
    results, errors, seconds = {}, {}, {}
    for i, (name, argv) in enumerate(benchmarks.items(), 1):
        console.print(f"[{i}/{len(benchmarks)}] bench speed {name} ...", highlight=False)
        results[name], error, seconds[name] = run_one(name, argv, out)
        if error:
            errors[name] = error
            console.print(f"  {name} failed: {error}", highlight=False)
    # 2. checks, the table and the files
    checks = evaluate(results, cfg.device, cfg.margin)
    failed = [r for r in checks if r["status"] == "FAIL"]
    suite = {"benchmark": "speed/suite", "mode": mode, "date": time.strftime("%Y-%m-%d"), "margin": cfg.margin,
             "machine": machine(), "commands": {n: ["videoalign", "bench", "speed", n, *a] for n, a in benchmarks.items()},
             "seconds": {n: round(s, 1) for n, s in seconds.items()}, "benchmarks": results, "errors": errors,
             "checks": checks, "passed": not failed and not errors}
    write_json(out / "suite.json", suite)
    write_atomic(out / "suite.md", markdown(suite))
    print_table(suite)
    console.print(f"wrote {out / 'suite.json'} and {out / 'suite.md'} ({sum(seconds.values()):.0f} s)", highlight=False)
    if errors:
        console.print(f"{len(errors)} benchmark(s) failed: {', '.join(errors)}", highlight=False)
        return 1
    if failed:
        what = "; ".join(f"{r['benchmark']} {r['figure']} = {_fmt(r['value'])} > gate {_fmt(r['gate'])}"
                         for r in failed)
        console.print(f"{'gate failed' if cfg.gate else 'checks missed'}: {what}", highlight=False)
        return 1 if cfg.gate else 0
    return 0
