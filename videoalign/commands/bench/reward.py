"""`videoalign bench reward`: reward-model accuracy on human-labelled pairs, and normalisation calibration.

Accuracy (paper Table 2): every distinct video of the pair file is scored once into a resumable score cache
(`--scores`, the format of `videoalign score --output`, so a previous scoring run is reused); then per dimension
and for Overall (the sum of the dimensions, or one dimension with `--overall TA` as the GenAI-Bench protocol
does) it reports accuracy without ties, accuracy with ties (exact tie-threshold sweep, or the reference's
`calc_accuracy.py` with `--ties compat`), the chosen threshold and the human tie rate. Writes a markdown
table, a PNG of accuracy against tie threshold and, with `--json`, the figures.

`--calibrate`: raw scores of the videos -> per-dimension mean and std written into the checkpoint
(model_config.json's inference_config, or our config.json), after which `score` reports z-scores.

1 process: videoalign bench reward --pairs videogen-rewardbench.csv --videos-root videos/ --json acc.json
N GPUs:    accelerate launch --num_processes N -m videoalign bench reward --pairs ... --json acc.json
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from videoalign.reward.settings import ScoringConfig


@dataclass
class RewardBenchConfig(ScoringConfig):
    #: human-labelled pairs: VideoGen-RewardBench/reference CSV or GenAI-Bench votes (CSV or JSONL)
    pairs: str | None = None
    #: folder the pair file's video paths are relative to (default: the pair file's folder)
    videos_root: str | None = None
    #: score cache in `videoalign score` format; reused and extended (default <output>.scores.jsonl)
    scores: str | None = None
    #: exact = the tie-threshold sweep of Deutsch et al. 2023; compat = the reference calc_accuracy.py
    ties: Literal["exact", "compat"] = "exact"
    #: model side of Overall: "sum" of the dimensions, or one dimension (GenAI-Bench protocol: TA)
    overall: str = "sum"
    #: prefix of the report files: <output>.md and <output>.ties.png
    output: str | None = "bench_reward"
    #: also write the figures as JSON here
    json: str | None = None
    #: compute per-dimension mean/std of raw scores over the videos and store them in the checkpoint
    calibrate: bool = False
    #: csv of videos (video,prompt) to calibrate on, instead of pairs
    csv: str | None = None
    #: reference = the leaderboard's scoring order (docs/numerics.md): distinct videos sorted by path as written,
    #: batches of 8 in bf16, one process; bf16 scores depend on batch composition, so only this order matches
    protocol: Literal["default", "reference"] = "default"

    def __post_init__(self):
        super().__post_init__()
        if self.protocol == "reference":
            self.batch_size = 8
            if self.dtype == "auto":
                self.dtype = "bfloat16"
        if not self.pairs and not self.csv:
            raise ValueError("bench reward needs --pairs PAIRS.csv (or --csv VIDEOS.csv with --calibrate)")
        if self.csv and not self.calibrate:
            raise ValueError("--csv is for --calibrate; measure accuracy with --pairs")

    def cache_path(self) -> Path:
        return Path(self.scores) if self.scores else Path(f"{self.output}.scores.jsonl")


def pair_items(pairs):
    """Distinct ScoreItems of the pairs (first prompt of each video), in first-seen order."""
    from videoalign.data import ScoreItem, video_key

    items: dict[str, ScoreItem] = {}
    for p in pairs:
        for video, path in ((p.video_a, p.path_a), (p.video_b, p.path_b)):
            key = video_key(path)
            items.setdefault(key, ScoreItem(key, video, Path(key), p.prompt))
    return list(items.values())


def model_side(record: dict, dims: list[str], overall: str) -> dict[str, float]:
    values = {d: float(record[d]) for d in dims}
    values["Overall"] = sum(values.values()) if overall == "sum" else values[overall]
    return values


def accuracy_table(pairs, scored: dict[str, dict], dims: list[str], cfg: RewardBenchConfig):
    """Figures per dimension (metrics.accuracy_figures), plus the curves for the plot and the pairs left out."""
    from videoalign import metrics
    from videoalign.data import video_key
    from videoalign.labels import INVALID

    figures, curves, missing = {}, {}, 0
    usable = []
    for p in pairs:
        a, b = scored.get(video_key(p.path_a)), scored.get(video_key(p.path_b))
        if a is None or b is None or "error" in a or "error" in b:
            missing += 1
            continue
        usable.append((p, model_side(a, dims, cfg.overall), model_side(b, dims, cfg.overall)))
    for dim in [*dims, "Overall"]:
        # a masked label (invalid, empty) is a NaN human label: a pair the model can only get wrong, as the
        # reference's calc_accuracy.py counts it
        rows = [(math.nan if p.labels[dim] == INVALID else float(p.labels[dim]), sa[dim] - sb[dim])
                for p, sa, sb in usable if dim in p.labels]
        if not rows:
            continue
        human = [h for h, _ in rows]
        margin = [m for _, m in rows]
        figures[dim] = metrics.accuracy_figures(human, margin, compat=cfg.ties == "compat")
        curves[dim] = metrics.tie_accuracy_curve(human, margin)
    return figures, curves, missing


def markdown(figures: dict, cfg: RewardBenchConfig, skipped: int) -> str:
    overall = ("Overall: the model's sum of the dimensions against the human Overall label" if cfg.overall == "sum"
               else f"Overall: the model's {cfg.overall} against the human Overall label")
    if "Overall" not in figures:
        overall = "no Overall row: the pair file has no Overall labels"
    lines = [f"# Reward-model accuracy: {cfg.model} on {cfg.pairs}", "",
             f"ties: {cfg.ties}; {overall}; pairs skipped (unscored video): {skipped}", "",
             "| dimension | accuracy w/o ties | accuracy w/ ties | tie threshold | human tie rate | pairs |",
             "|---|---|---|---|---|---|"]
    for dim, f in figures.items():
        threshold = "-inf" if f["tie_threshold"] is None else f"{f['tie_threshold']:.4g}"
        lines.append(f"| {dim} | {100 * f['accuracy_without_ties']:.2f} | {100 * f['accuracy_with_ties']:.2f} | "
                     f"{threshold} | {100 * f['human_tie_rate']:.2f} | {f['pairs']} |")
    return "\n".join(lines) + "\n"


def calibrate(records: list[dict], dims: list[str], model: str) -> dict[str, dict[str, float]]:
    """Mean and population std of raw scores per dimension; stored in the checkpoint folder `model`."""
    from videoalign.reward.model import update_normalization

    ok = [r for r in records if "error" not in r]
    if len(ok) < 2:
        raise ValueError(f"calibration needs at least 2 scored videos, got {len(ok)}")
    stats = {}
    for d in dims:
        values = [float(r["raw"][d]) for r in ok]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        if std <= 0:
            raise ValueError(f"raw {d} scores are all equal over {len(ok)} videos; calibrate on varied videos")
        stats[d] = {"mean": mean, "std": std}
    update_normalization(Path(model), stats)
    return stats


def adopt_scores(path: Path, root: Path) -> None:
    """Give records of a score file that lack `path` (written by other tools) the absolute path of their
    `video` as the pair file writes it, so they match the pair file's videos and are not rescored."""
    from videoalign.data import read_jsonl, video_key, write_jsonl_atomic

    records = read_jsonl(path)
    if not any("path" not in r for r in records):
        return
    for r in records:
        if "path" not in r and r.get("video"):
            r["path"] = video_key(root / r["video"])
    write_jsonl_atomic(path, records)


def run(cfg: RewardBenchConfig) -> int:
    from videoalign.data import read_score_csv, write_atomic, write_json
    from videoalign.distributed import make_accelerator
    from videoalign.labels import read_pairs
    from videoalign.log import console, stdout
    from videoalign.reward.scoring import score_into

    if cfg.calibrate:
        if not Path(cfg.model).is_dir():
            raise ValueError(f"--calibrate writes into the checkpoint: --model must be a local folder, got {cfg.model}")
        cfg.raw = True  # statistics of the raw head outputs
    accelerator = make_accelerator(cfg.device)
    found = read_pairs(cfg.pairs, cfg.videos_root, check_videos=False) if cfg.pairs else None
    pairs = found.pairs if found else []
    if found and accelerator.is_main_process:
        for problem in found.problems:
            console.print(f"[yellow]skipped:[/] {problem}", highlight=False)
    items = pair_items(pairs) if pairs else read_score_csv(cfg.csv)
    if cfg.protocol == "reference":
        if accelerator.num_processes > 1:
            raise ValueError("--protocol reference scores in one fixed order of batches: run it on one process")
        items = sorted(items, key=lambda it: it.video)  # lexicographic on the path as the pair file writes it
    if cfg.pairs and accelerator.is_main_process:
        adopt_scores(cfg.cache_path(), Path(cfg.videos_root) if cfg.videos_root else Path(cfg.pairs).parent)
    accelerator.wait_for_everyone()
    records = score_into(cfg, accelerator, items, cfg.cache_path(), cfg.pairs or cfg.csv)
    if not accelerator.is_main_process:
        return 0
    first = next((r for r in records if "error" not in r), None)
    if first is None:
        raise ValueError(f"no video of {cfg.pairs or cfg.csv} could be scored; see the errors in {cfg.cache_path()}")
    dims = [k for k in first["raw"] if k != "Overall"]
    if cfg.overall != "sum" and cfg.overall not in dims:
        raise ValueError(f"--overall {cfg.overall!r} is not a dimension of the model ({', '.join(dims)}) or 'sum'")
    if cfg.calibrate:
        stats = calibrate(records, dims, cfg.model)
        console.print(f"stored normalisation statistics in {cfg.model}: "
                      + ", ".join(f"{d} mean {s['mean']:.4f} std {s['std']:.4f}" for d, s in stats.items()),
                      highlight=False)
        if not pairs:
            return 0
    scored = {r["path"]: r for r in records}
    figures, curves, skipped = accuracy_table(pairs, scored, dims, cfg)
    report = markdown(figures, cfg, skipped)
    write_atomic(f"{cfg.output}.md", report)
    from videoalign.plots import accuracy_curves

    accuracy_curves(curves, f"{cfg.output}.ties.png", title=f"{Path(cfg.model).name}: accuracy vs tie threshold")
    if cfg.json:
        write_json(cfg.json, figures)
    stdout.print(report, markup=False, highlight=False)
    console.print(f"wrote {cfg.output}.md, {cfg.output}.ties.png" + (f" and {cfg.json}" if cfg.json else ""),
                  highlight=False)
    return 0
