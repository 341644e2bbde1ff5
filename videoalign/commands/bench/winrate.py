"""`videoalign bench winrate`: VideoReward win rates of an aligned model against its base (docs/numerics.md, Win rates).

Both models sample every prompt with the same seeds and sampler settings: video j of prompt i (its position in
the prompt file after `limit`) comes from seed + i * K + j (K = videos_per_prompt; seed + i for K = 1, as in
`guide`). Every video is scored with VideoReward. Per dimension, and for the reward r = sum_d w_d s_d / sum_d w_d
(docs/numerics.md, Overall and reward), a pair is a win when aligned - base > tie_threshold, a tie when
|aligned - base| <= tie_threshold (byte-identical
videos always tie), and win_rate = (wins + ties / 2) / n (metrics.win_tie_loss): a model against itself gets 0.5.

Outputs in `output_dir`:
    videos/{base,aligned}/NAME  NAME = <i:05d>.mp4 for K = 1 (guide's names), else <i:05d>-<j:02d>.mp4
    videos.jsonl                one line per pair: index, video (j), prompt, seed, base, aligned (paths)
    scores.jsonl                the score cache (`videoalign score --output` format, keyed by absolute path)
    winrate.json                figures per dimension, settings, versions, and every pair with its scores
    winrate.md, winrate.png     a markdown table; stacked win/tie/loss bars per dimension
    winrate.config.yaml         the resolved config: a rerun with other video or score settings is refused
`--base-videos DIR` / `--aligned-videos DIR` take existing videos with the same NAMEs (e.g. `guide` output
folders) instead of sampling that side; with both, no video model is loaded. Sampling and scoring are sharded over
processes; videos are written atomically and reused, scores are cached, so a rerun after an interruption does
only what is missing. tie_threshold, weights and limit may change between runs.

1 GPU:  videoalign bench winrate --recipe recipes/bench/winrate_wan2_1_t2v_1_3b.yaml --aligned runs/dpo/final
N GPUs: accelerate launch --num_processes N -m videoalign bench winrate --recipe recipes/bench/winrate_wan2_1_t2v_1_3b.yaml --aligned runs/dpo/final
"""

from __future__ import annotations

import dataclasses
import filecmp
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from videoalign.config import config_to_dict
from videoalign.gen.families import DEFAULT_MODEL, TINY_RANDOM, model_kind
from videoalign.reward.settings import SCORE_SETTINGS, ScoringConfig

SIDES = ("base", "aligned")
#: settings that change the videos (scores: reward.*): an output_dir made with other values cannot be resumed into
WINRATE_SETTINGS = ("base", "aligned", "base_videos", "aligned_videos", "videos_per_prompt", "seed", "steps",
                    "guidance_scale", "negative_prompt", "shift", "num_frames", "height", "width", "fps", "dtype")


@dataclass
class WinrateConfig:
    #: prompt file: a CSV with a `prompt` column (../shared/data/eval_prompts/*.csv) or a .txt, one prompt a line
    prompts: str | None = None
    #: only the first N prompts of the file
    limit: int | None = None
    #: the pretrained model: a diffusers folder, a hub id or tiny-random
    base: str = DEFAULT_MODEL
    #: the aligned model: a pipeline (folder, hub id, tiny-random) or a LoRA of `base` (dpo/rwr's final/ or its file)
    aligned: str | None = None
    #: existing base videos, named as in videos/base/ (e.g. a `guide --scale 0` folder), instead of sampling them
    base_videos: str | None = None
    #: existing aligned videos, named as in videos/aligned/, instead of sampling them
    aligned_videos: str | None = None
    #: videos per prompt K; video j of prompt i is sampled from seed + i * K + j by both models
    videos_per_prompt: int = 1
    #: video j of prompt i is sampled from seed + i * K + j
    seed: int = 0
    #: Euler sampling steps
    steps: int = 50
    #: classifier-free guidance scale (1 = no negative branch)
    guidance_scale: float = 5.0
    #: negative prompt of classifier-free guidance
    negative_prompt: str = ""
    #: flow shift of the sampling times (null: the family's, 3.0 for Wan)
    shift: float | None = None
    #: frames per video, 4k+1
    num_frames: int = 81
    #: video height, a multiple of 16
    height: int = 480
    #: video width, a multiple of 16
    width: int = 832
    #: frames per second written into the mp4s (scoring samples 2 fps of them)
    fps: float = 16.0
    #: transformer and text-encoder dtype; auto = bfloat16 on CUDA, float32 on CPU
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    #: auto, cpu, cuda or cuda:N (under accelerate launch each process uses its own); sampling and scoring
    device: str = "auto"
    #: videos sampled together per process (rows do not interact; seeds are per video)
    batch_size: int = 1
    #: |aligned - base| <= this is a tie (0: exact equality only)
    tie_threshold: float = 0.0
    #: VQ:MQ:TA weights of the reward row, r = sum_d w_d s_d / sum_d w_d: "1:1:1" or "TA=1"
    weights: str = "1:1:1"
    #: VideoReward settings, `videoalign score`'s keys (reward.model, reward.batch_size, ...; not reward.device)
    reward: ScoringConfig = field(default_factory=ScoringConfig)
    #: videos, scores and reports go here; a rerun resumes
    output_dir: str = "runs/bench_winrate"

    def __post_init__(self):
        from videoalign.preferences import parse_weights

        if not self.prompts or not Path(self.prompts).is_file():
            raise ValueError(f"prompts: {self.prompts or 'not given'}: no such file; pass --prompts FILE (a CSV with a "
                             "prompt column, e.g. ../shared/data/eval_prompts/videogen_eval.csv, or a .txt)")
        for name in ("limit", "videos_per_prompt", "steps", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("tie_threshold", "guidance_scale"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.fps <= 0 or (self.shift is not None and self.shift <= 0):
            raise ValueError(f"fps and shift must be positive, got {self.fps} and {self.shift}")
        if "=" not in self.weights:  # the count is checked against the reward model's dimensions after scoring
            parse_weights(self.weights, [str(i) for i in range(self.weights.count(":") + 1)])
        for side in SIDES:
            folder = getattr(self, f"{side}_videos")
            if folder is not None and not Path(folder).is_dir():
                raise ValueError(f"{side}_videos: {folder}: no such folder; pass the folder of existing {side} videos")
        if not self.aligned and not self.aligned_videos:
            raise ValueError("aligned: required; pass --aligned MODEL_OR_LORA (or --aligned-videos DIR)")
        kind = model_kind(self.aligned) if not self.aligned_videos else None
        models = ["base"] if not self.base_videos or kind in ("lora", "transformer") else []
        for name in models + (["aligned"] if kind == "pipeline" else []):  # the models that will sample
            _family(getattr(self, name), name).check_clip(self.num_frames, self.height, self.width)


def _family(model: str, name: str):
    """The model's family, or a ValueError naming the field. A missing local path (absolute, ./, ~, or not one
    `org/name` slash) is reported as such instead of being looked up on the hub."""
    from videoalign.gen.families import family_of

    if model != TINY_RANDOM and not Path(model).exists() and (model.startswith(("/", ".", "~"))
                                                              or model.count("/") != 1):
        raise ValueError(f"{name}: {model}: no such file or folder; pass a diffusers folder, a hub id or tiny-random"
                         + (", or a LoRA folder" if name == "aligned" else ""))
    try:
        return family_of(model)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


# -- the video pairs and resuming -----------------------------------------------------------------------------

def build_entries(cfg: WinrateConfig, prompts: list[str]) -> list[dict]:
    """One entry per (prompt i, video j): prompt, seed and the two video paths (gen/sampling.py's convention)."""
    from videoalign.gen.sampling import video_name

    folders = {s: Path(getattr(cfg, f"{s}_videos") or Path(cfg.output_dir) / "videos" / s) for s in SIDES}
    k = cfg.videos_per_prompt
    return [{"index": i, "video": j, "prompt": p, "seed": cfg.seed + i * k + j,
             **{s: str(folders[s] / video_name(i, j, k)) for s in SIDES}}
            for i, p in enumerate(prompts) for j in range(k)]


def video_list(out: Path):
    """videos.jsonl (one entry per (prompt i, video j)) as a ResumableOutput, its settings in winrate.config.yaml."""
    from videoalign.resumable import ResumableOutput

    return ResumableOutput(out / "videos.jsonl", lambda e: (e["index"], e["video"]), out / "winrate.config.yaml")


def settings_of(config: dict) -> dict:
    """The settings that change the videos and their scores, flat (`reward.model`, ...)."""
    return {**{k: config[k] for k in WINRATE_SETTINGS if k in config},
            **{f"reward.{k}": v for k, v in (config.get("reward") or {}).items() if k in SCORE_SETTINGS}}


def check_resumable(out: Path, cfg: WinrateConfig, entries: list[dict]) -> dict:
    """Where `out` holds videos or scores, refuse other settings (naming the field) or other prompts at the same
    positions; returns the old videos.jsonl entries by (index, video)."""
    import yaml

    videos = video_list(out)
    old = videos.done()
    saved_path = out / "winrate.config.yaml"
    made = any((out / "videos").glob("*/*.mp4")) or (out / "scores.jsonl").is_file()
    if saved_path.is_file() and made:
        saved, now = settings_of(yaml.safe_load(saved_path.read_text()) or {}), settings_of(config_to_dict(cfg))
        if changed := [k for k in saved if saved[k] != now.get(k)]:
            diffs = ", ".join(f"{k}: {saved[k]!r} -> {now.get(k)!r}" for k in changed)
            raise ValueError(f"{out} holds videos or scores made with other settings ({diffs}); use a new "
                             "--output-dir or the same settings to resume")
    for e in entries if made and not (cfg.base_videos and cfg.aligned_videos) else []:
        before = old.get((e["index"], e["video"]))
        if before is not None and before["prompt"] != e["prompt"]:
            raise ValueError(f"prompts: prompt {e['index']} of {cfg.prompts} is {e['prompt'][:40]!r}, but the videos "
                             f"in {out} were made for {before['prompt'][:40]!r}; use a new --output-dir")
    return old


# -- sampling -------------------------------------------------------------------------------------------------

# -- figures --------------------------------------------------------------------------------------------------

def figures_of(entries: list[dict], scored: dict[str, dict], cfg: WinrateConfig):
    """(figures per dimension and for the reward, weights, scored pairs, failed records)."""
    from videoalign.data import video_key
    from videoalign.labels import REWARD
    from videoalign.metrics import win_tie_loss
    from videoalign.preferences import parse_weights, weighted_reward

    records = {e[s]: scored.get(video_key(e[s])) or {"error": f"{e[s]}: not scored"} for e in entries for s in SIDES}
    failed = [r for r in records.values() if "error" in r]
    first = next((r for r in records.values() if "error" not in r), None)
    if first is None:
        raise ValueError(f"no video could be scored; see the errors in {Path(cfg.output_dir) / 'scores.jsonl'}")
    try:
        weights = parse_weights(cfg.weights, [k for k in first["raw"] if k != "Overall"])
    except ValueError as exc:
        raise ValueError(f"weights: {exc}") from None
    pairs = []
    for e in entries:
        base, aligned = records[e["base"]], records[e["aligned"]]
        if "error" in base or "error" in aligned:
            continue
        # byte-identical videos tie exactly: VideoReward's float noise across batch positions must not decide them
        same = filecmp.cmp(e["base"], e["aligned"], shallow=False)
        scores = {s: {**{d: float(r[d]) for d in weights}, REWARD: weighted_reward(r, weights)}
                  for s, r in (("base", base), ("aligned", base if same else aligned))}
        pairs.append({**e, "identical": same, "scores": scores})
    figures = {}
    for dim in [*weights, REWARD]:
        a, b = [p["scores"]["aligned"][dim] for p in pairs], [p["scores"]["base"][dim] for p in pairs]
        figures[dim] = {**win_tie_loss(a, b, cfg.tie_threshold).as_dict(),
                        "mean_base": sum(b) / len(b) if b else math.nan,
                        "mean_aligned": sum(a) / len(a) if a else math.nan}
    return figures, weights, pairs, failed


COLUMNS = ("dimension", "win rate %", "wins", "ties", "losses", "n", "mean base", "mean aligned")


def table_rows(figures: dict) -> list[list[str]]:
    return [[dim, f"{100 * f['win_rate']:.2f}", *(str(f[k]) for k in ("wins", "ties", "losses", "n")),
             f"{f['mean_base']:.4f}", f"{f['mean_aligned']:.4f}"] for dim, f in figures.items()]


def markdown(figures: dict, cfg: WinrateConfig, weights: dict, left_out: int) -> str:
    lines = [f"# VideoReward win rates: {cfg.aligned_videos or cfg.aligned} vs {cfg.base_videos or cfg.base}", "",
             (f"prompts: {cfg.prompts} x {cfg.videos_per_prompt} video(s), seed {cfg.seed}; reward: "
              f"{cfg.reward.model}; tie: |aligned - base| <= {cfg.tie_threshold:g}; reward weights "
              f"{':'.join(f'{w:g}' for w in weights.values())}; unscored pairs left out: {left_out}"), "",
             "| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in table_rows(figures)]) + "\n"


def report(figures: dict, cfg: WinrateConfig, weights: dict, pairs: list[dict], left_out: int) -> None:
    """winrate.json, winrate.md and winrate.png (atomic), and a table on stdout."""
    import platform
    from importlib.metadata import version

    from rich.table import Table

    from videoalign.data import write_atomic, write_json
    from videoalign.log import stdout
    from videoalign.plots import win_tie_loss_bars

    out = Path(cfg.output_dir)
    payload = {"figures": figures, "weights": weights, "pairs_scored": len(pairs), "pairs_left_out": left_out,
               "settings": config_to_dict(cfg), "pairs": pairs, "versions": {"python": platform.python_version(), **{
                   m: version(m) for m in ("videoalign", "torch", "diffusers", "transformers", "accelerate")}}}
    write_json(out / "winrate.json", payload)
    write_atomic(out / "winrate.md", markdown(figures, cfg, weights, left_out))
    win_tie_loss_bars(figures, out / "winrate.png",
                      title=f"{cfg.aligned_videos or cfg.aligned} vs {cfg.base_videos or cfg.base}")
    table = Table(title=f"win rates against the base ({len(pairs)} pairs, tie <= {cfg.tie_threshold:g})")
    for name in COLUMNS:
        table.add_column(name, justify="left" if name == "dimension" else "right")
    for row in table_rows(figures):
        table.add_row(*row)
    stdout.print(table)


def run(cfg: WinrateConfig) -> int:
    import gc

    import torch

    from videoalign.data import ScoreItem, read_prompt_file, video_key, write_jsonl_atomic
    from videoalign.distributed import broadcast_from_main, make_accelerator, shard
    from videoalign.gen.generator import load_generator
    from videoalign.gen.lora import check_lora_file, check_transformer_folder
    from videoalign.gen.sampling import load_aligned, sample_videos
    from videoalign.log import console
    from videoalign.reward.scoring import score_into

    # 1. everything that can fail at once, before any sampling
    prompts = read_prompt_file(cfg.prompts)[:cfg.limit]
    if not prompts:
        raise ValueError(f"prompts: {cfg.prompts} holds no prompts")
    accelerator = make_accelerator(cfg.device)
    device = accelerator.device
    cfg = dataclasses.replace(cfg, dtype=cfg.dtype if cfg.dtype != "auto" else
                              ("bfloat16" if device.type == "cuda" else "float32"))
    out = Path(cfg.output_dir)
    entries = build_entries(cfg, prompts)
    old = check_resumable(out, cfg, entries)
    sampled = [s for s in SIDES if not getattr(cfg, f"{s}_videos")]
    for side in (s for s in SIDES if s not in sampled):
        if missing := [e[side] for e in entries if not Path(e[side]).is_file()]:
            raise ValueError(f"{side}_videos: {len(missing)} of {len(entries)} videos missing, e.g. {missing[0]}; "
                             "name them <i:05d>.mp4 (<i:05d>-<j:02d>.mp4 for several per prompt), i = the prompt's "
                             "position in the prompt file")

    # 2. what is left to sample (a video file is complete: writes are atomic), sharded round-robin
    rank, world = accelerator.process_index, accelerator.num_processes
    todo = {s: [e for e in entries if not Path(e[s]).is_file()] for s in sampled}
    mine = {s: shard(todo[s], rank, world) for s in sampled}
    gen = None
    kind = model_kind(cfg.aligned) if mine.get("aligned") else None
    if kind in ("lora", "transformer"):  # an aligned model that does not fit the base fails here, before sampling
        gen = load_generator(cfg.base, cfg.dtype, device)
        check = check_lora_file if kind == "lora" else check_transformer_folder
        try:
            check(gen.transformer, cfg.aligned)
        except ValueError as exc:
            raise ValueError(f"aligned: {exc}; pass the model it was trained on as --base ({cfg.base} now)") from None
    accelerator.wait_for_everyone()  # every rank has read the old state before rank 0 writes
    if accelerator.is_main_process:
        video_list(out).save_settings(config_to_dict(cfg))
        merged = {**old, **{(e["index"], e["video"]): e for e in entries}}
        write_jsonl_atomic(out / "videos.jsonl", [merged[k] for k in sorted(merged)])
        console.print(f"{len(prompts)} prompts x {cfg.videos_per_prompt}: " + "; ".join(
            f"{s} {len(entries) - len(todo[s])} reused, {len(todo[s])} to sample" if s in todo else
            f"{s} from {getattr(cfg, f'{s}_videos')}" for s in SIDES) + f" on {world} process(es)", highlight=False)

    # 3. this rank's share, base first; a LoRA is then fused into the base model, a pipeline loaded instead
    for side in (s for s in sampled if mine[s]):
        if side == "aligned" and model_kind(cfg.aligned) == "pipeline":
            gen = None  # free the base model first
            gc.collect()
            torch.cuda.empty_cache()
        gen = load_generator(cfg.base, cfg.dtype, device) if side == "base" else \
            load_aligned(cfg.aligned, cfg.base, cfg.dtype, device, gen)
        sample_videos(gen, [(e[side], e["prompt"], e["seed"]) for e in mine[side]], cfg, f"sampling {side}",
                      accelerator.is_main_process)
    gen = None
    accelerator.wait_for_everyone()

    # 4. score every video (cached: a rerun scores only what is new), then the figures on rank 0
    items = {video_key(e[s]): ScoreItem(video_key(e[s]), e[s], Path(video_key(e[s])), e["prompt"])
             for e in entries for s in SIDES}  # a folder compared with itself holds each video once
    records = score_into(cfg.reward, accelerator, list(items.values()), out / "scores.jsonl", str(out))
    failed = 0
    if accelerator.is_main_process:
        figures, weights, pairs, failures = figures_of(entries, {r["path"]: r for r in records}, cfg)
        report(figures, cfg, weights, pairs, len(entries) - len(pairs))
        for r in failures:
            console.print(f"[red]failed:[/] {r['error']}", highlight=False)
        console.print(f"wrote {out / 'winrate.json'}, winrate.md and winrate.png", highlight=False)
        failed = len(failures)
    return 1 if broadcast_from_main(accelerator, failed) else 0
