"""The `videoalign` command line: one short Typer function per subcommand, heavy imports inside each.

Every command resolves its config as defaults < `--recipe FILE.yaml` < flags < `--set key=value` (see
config.py) and hands it to `commands/<cmd>.py`. Errors in the input exit with code 2 and one line naming
the file or key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="videoalign",
    help="Score, train and align text-to-video models with VideoReward (VideoAlign, arXiv 2501.13918).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
bench_app = typer.Typer(help="Benchmarks that record their figures as JSON.", no_args_is_help=True)
speed_app = typer.Typer(help="Speed and memory benchmarks: all of them with targets (no subcommand), or one.")
bench_app.add_typer(speed_app, name="speed")
app.add_typer(bench_app, name="bench")

ModelOpt = typer.Option(None, help="Hub id, checkpoint folder, or tiny-random.")
BaseModelOpt = typer.Option(None, help="Base Qwen2-VL (hub id or folder), for offline use.")
StepOpt = typer.Option(None, help="checkpoint-<step> to load; default the largest.")
DtypeOpt = typer.Option(None, help="auto, float32, bfloat16 or float16.")
DeviceOpt = typer.Option(None, help="auto, cpu, cuda or cuda:N.")
BatchOpt = typer.Option(None, help="Videos per forward pass.")
WorkersOpt = typer.Option(None, help="Decoding threads running ahead of the model.")
RecipeOpt = typer.Option(None, "--recipe", help="YAML recipe with config keys (see recipes/).")
SetOpt = typer.Option(None, "--set", help="Override any config key: --set key=value (repeatable).")


def _resolve(cls, recipe: Optional[Path], flags: dict, overrides: Optional[list[str]]):
    """Build the config or exit 2 with the reason."""
    from videoalign.config import ConfigError, build_config, load_recipe, parse_overrides

    try:
        layers = [load_recipe(recipe) if recipe else {}, {k: v for k, v in flags.items() if v is not None},
                  parse_overrides(overrides)]
        return build_config(cls, *layers)
    except ConfigError as err:
        _fail(str(err))


def _fail(message: str, code: int = 2):
    from videoalign.log import error_line

    error_line(message)
    raise typer.Exit(code)


def _guard(fn, *args):
    """Run a command; user-input errors become one line and exit 2, without a traceback."""
    from videoalign.log import setup_logging

    from videoalign.distributed import shutdown

    setup_logging()
    try:
        return fn(*args)
    except (ValueError, FileNotFoundError) as err:  # DataError, CheckpointError, VideoError, ConfigError
        _fail(str(err).splitlines()[0] if str(err) else err.__class__.__name__)
    finally:
        shutdown()


@app.command()
def score(
    video: Optional[str] = typer.Argument(None, help="A video file to score (or use --csv)."),
    prompt: Optional[str] = typer.Argument(None, help="The text prompt the video was generated from."),
    csv: Optional[str] = typer.Option(None, "--csv", help="CSV of video,prompt (or path_A,path_B,prompt)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="JSONL file for --csv; reruns resume."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per video instead of a table."),
    model: Optional[str] = ModelOpt,
    base_model: Optional[str] = BaseModelOpt,
    checkpoint_step: Optional[int] = StepOpt,
    dtype: Optional[str] = DtypeOpt,
    device: Optional[str] = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    num_workers: Optional[int] = WorkersOpt,
    fps: Optional[float] = typer.Option(None, help="Frames sampled per second (default: the checkpoint's)."),
    num_frames: Optional[int] = typer.Option(None, help="Fixed frame count instead of --fps."),
    max_pixels: Optional[int] = typer.Option(None, help="Upper bound on resized frame area."),
    raw: Optional[bool] = typer.Option(None, "--raw/--normalized", help="Raw head outputs, not z-scores."),
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Score videos with VideoReward: VQ, MQ, TA and Overall.

    \b
    One clip:   videoalign score clip.mp4 "a prompt" [--json]
    Many clips: videoalign score --csv videos.csv --output scores.jsonl
    N GPUs:     accelerate launch --num_processes N -m videoalign score --csv videos.csv --output scores.jsonl
    """
    from videoalign.commands.score import ScoreConfig, run_batch, run_single

    flags = dict(csv=csv, output=output, model=model, base_model=base_model, checkpoint_step=checkpoint_step,
                 dtype=dtype, device=device, batch_size=batch_size, num_workers=num_workers, fps=fps,
                 num_frames=num_frames, max_pixels=max_pixels, raw=raw)
    cfg = _resolve(ScoreConfig, recipe, flags, set_)
    if cfg.csv:
        if video or prompt:
            _fail("pass either VIDEO PROMPT or --csv, not both")
        raise typer.Exit(_guard(run_batch, cfg))
    if not video or prompt is None:
        _fail('pass a video and its prompt (videoalign score clip.mp4 "a prompt") or --csv FILE --output FILE')
    raise typer.Exit(_guard(run_single, cfg, video, prompt, as_json))


@app.command("train-reward")
def train_reward(
    train_csv: Optional[str] = typer.Option(None, "--train-csv", help="Training pairs: path_A,path_B,prompt,<label columns>."),
    val_csv: Optional[str] = typer.Option(None, "--val-csv", help="Validation pairs, evaluated every --eval-every steps."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="metrics.jsonl, checkpoints/, final/."),
    base_model: Optional[str] = BaseModelOpt,
    init_from: Optional[str] = typer.Option(None, help="Fine-tune this VideoReward checkpoint instead."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
    batch_size: Optional[int] = BatchOpt,
    grad_accum: Optional[int] = typer.Option(None, help="Micro-steps per optimiser step."),
    device: Optional[str] = DeviceOpt,
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue from the newest checkpoint."),
    export_layout: Optional[str] = typer.Option(None, help="native, or reference to also write the reference layout."),
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Train a multi-dimension VideoReward with the Bradley-Terry-with-ties loss (all keys: --recipe / --set).

    \b
    1 GPU:  videoalign train-reward --recipe recipes/train_reward/videoreward_2b.yaml
    N GPUs: accelerate launch --num_processes N -m videoalign train-reward --recipe recipes/train_reward/videoreward_2b.yaml
    """
    from videoalign.commands.train_reward import TrainRewardConfig, run

    flags = dict(train_csv=train_csv, val_csv=val_csv, output_dir=output_dir, base_model=base_model,
                 init_from=init_from, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
                 device=device, resume=resume, export_layout=export_layout)
    cfg = _resolve(TrainRewardConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run, cfg))


@app.command()
def relabel(
    input: Optional[str] = typer.Argument(None, help="Manifest (CSV/JSONL: prompt,video[,group,model]) or pair CSV; - = stdin."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Pairs JSONL; - = stdout."),
    scores: Optional[str] = typer.Option(None, "--scores", help="Score cache (videoalign score format)."),
    pairing: Optional[str] = typer.Option(None, help="all or best-worst (within a group or prompt)."),
    weights: Optional[str] = typer.Option(None, help="VQ:MQ:TA weights, e.g. 1:1:1 or 0.1:0.1:0.8."),
    tie_threshold: Optional[float] = typer.Option(None, help="|score difference| <= this is a tie."),
    min_margin: Optional[float] = typer.Option(None, help="Drop pairs with a smaller weighted margin."),
    model: Optional[str] = ModelOpt,
    base_model: Optional[str] = BaseModelOpt,
    checkpoint_step: Optional[int] = StepOpt,
    dtype: Optional[str] = DtypeOpt,
    device: Optional[str] = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    num_workers: Optional[int] = WorkersOpt,
    raw: Optional[bool] = typer.Option(None, "--raw/--normalized", help="Label on raw head outputs."),
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Turn generated videos into VideoReward-labelled preference pairs (the input of dpo and rwr).

    \b
    videoalign relabel manifest.csv --output pairs.jsonl --pairing best-worst --weights 1:1:1
    accelerate launch --num_processes N -m videoalign relabel manifest.csv --output pairs.jsonl
    """
    from videoalign.commands.relabel import RelabelConfig, run

    flags = dict(input=input, output=output, scores=scores, pairing=pairing, weights=weights,
                 tie_threshold=tie_threshold, min_margin=min_margin, model=model, base_model=base_model,
                 checkpoint_step=checkpoint_step, dtype=dtype, device=device, batch_size=batch_size,
                 num_workers=num_workers, raw=raw)
    cfg = _resolve(RelabelConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run, cfg))


DataOpt = typer.Option(None, "--data", help="Pair file: relabel's pairs JSONL or a reference pair CSV.")
AlignOutOpt = typer.Option(None, "--output-dir", "-o", help="metrics.jsonl, checkpoints/, samples/, final/.")
GenModelOpt = typer.Option(None, help="diffusers text-to-video model: hub id, folder or tiny-random.")
MaxStepsOpt = typer.Option(None, help="Stop after this many optimiser steps.")
AccumOpt = typer.Option(None, help="Micro-steps per optimiser step.")
LrOpt = typer.Option(None, "--lr", help="Learning rate (paper: 5e-6).")
ResumeOpt = typer.Option(None, "--resume", help="Continue from the newest checkpoint.")
MergeOpt = typer.Option(None, "--merge", help="Also save the pipeline with the LoRA fused in (merged/).")


@app.command()
def dpo(
    data: Optional[str] = DataOpt,
    output_dir: Optional[str] = AlignOutOpt,
    model: Optional[str] = GenModelOpt,
    beta: Optional[float] = typer.Option(None, help="DPO beta for the per-sample mean error (e.g. 5000)."),
    beta_schedule: Optional[str] = typer.Option(None, help="constant (Flow-DPO) or timestep: beta (1 - t)^2 (ablation)."),
    max_steps: Optional[int] = MaxStepsOpt,
    batch_size: Optional[int] = BatchOpt,
    grad_accum: Optional[int] = AccumOpt,
    learning_rate: Optional[float] = LrOpt,
    device: Optional[str] = DeviceOpt,
    resume: Optional[bool] = ResumeOpt,
    merge: Optional[bool] = MergeOpt,
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Flow-DPO with a constant beta on a rectified-flow video model (all keys: --recipe / --set).

    \b
    1 GPU:  videoalign dpo --recipe recipes/dpo/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl --beta 5000
    N GPUs: accelerate launch --num_processes N -m videoalign dpo --recipe recipes/dpo/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl
    """
    from videoalign.commands.dpo import DpoConfig, run

    flags = dict(data=data, output_dir=output_dir, model=model, beta=beta, beta_schedule=beta_schedule,
                 max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, learning_rate=learning_rate,
                 device=device, resume=resume, merge=merge)
    cfg = _resolve(DpoConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run, cfg))


@app.command()
def rwr(
    data: Optional[str] = typer.Option(None, "--data", help="relabel's pairs JSONL, a pair CSV or score's JSONL."),
    output_dir: Optional[str] = AlignOutOpt,
    model: Optional[str] = GenModelOpt,
    weighting: Optional[str] = typer.Option(None, help="exp, raw or uniform (uniform + --chosen-only = SFT)."),
    temperature: Optional[float] = typer.Option(None, help="Temperature of exp weighting."),
    chosen_only: Optional[bool] = typer.Option(None, "--chosen-only", help="Train on chosen videos only."),
    max_steps: Optional[int] = MaxStepsOpt,
    batch_size: Optional[int] = BatchOpt,
    grad_accum: Optional[int] = AccumOpt,
    learning_rate: Optional[float] = LrOpt,
    device: Optional[str] = DeviceOpt,
    resume: Optional[bool] = ResumeOpt,
    merge: Optional[bool] = MergeOpt,
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Flow-RWR (reward-weighted flow matching) or the SFT baseline (all keys: --recipe / --set).

    \b
    1 GPU:  videoalign rwr --recipe recipes/rwr/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl
    SFT:    videoalign rwr --recipe recipes/rwr/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl --weighting uniform --chosen-only
    N GPUs: accelerate launch --num_processes N -m videoalign rwr --recipe recipes/rwr/wan2_1_t2v_1_3b_lora.yaml --data pairs.jsonl
    """
    from videoalign.commands.rwr import RwrConfig, run

    flags = dict(data=data, output_dir=output_dir, model=model, weighting=weighting, temperature=temperature,
                 chosen_only=chosen_only, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
                 learning_rate=learning_rate, device=device, resume=resume, merge=merge)
    cfg = _resolve(RwrConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run, cfg))


@app.command("train-latent-rm")
def train_latent_rm(
    data: Optional[str] = typer.Option(None, "--data", help="Pairs with per-dimension labels: relabel's JSONL or a pair CSV."),
    val_data: Optional[str] = typer.Option(None, "--val-data", help="Evaluation pairs (default: the training pairs)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="metrics.jsonl, eval.json/png, checkpoints/, final/."),
    model: Optional[str] = GenModelOpt,
    max_steps: Optional[int] = MaxStepsOpt,
    batch_size: Optional[int] = typer.Option(None, help="Pairs per process per micro-step."),
    grad_accum: Optional[int] = AccumOpt,
    learning_rate: Optional[float] = LrOpt,
    device: Optional[str] = DeviceOpt,
    resume: Optional[bool] = ResumeOpt,
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Train the noisy-latent reward model of Flow-NRG (BTT loss on noised pairs; all keys: --recipe / --set).

    \b
    1 GPU:  videoalign train-latent-rm --recipe recipes/train_latent_rm/wan2_1_t2v_1_3b.yaml --data pairs.jsonl
    N GPUs: accelerate launch --num_processes N -m videoalign train-latent-rm --recipe recipes/train_latent_rm/wan2_1_t2v_1_3b.yaml --data pairs.jsonl
    """
    from videoalign.commands.train_latent_rm import TrainLatentRmConfig, run

    flags = dict(data=data, val_data=val_data, output_dir=output_dir, model=model, max_steps=max_steps,
                 batch_size=batch_size, grad_accum=grad_accum, learning_rate=learning_rate, device=device,
                 resume=resume)
    cfg = _resolve(TrainLatentRmConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run, cfg))


@bench_app.command("reward")
def bench_reward(
    pairs: Optional[str] = typer.Option(None, "--pairs", help="Human-labelled pairs (VideoGen-RewardBench CSV or GenAI-Bench votes)."),
    videos_root: Optional[str] = typer.Option(None, "--videos-root", help="Folder the pair file's paths are relative to."),
    scores: Optional[str] = typer.Option(None, "--scores", help="Score cache (videoalign score output) to reuse."),
    ties: Optional[str] = typer.Option(None, "--ties", help="exact (default) or compat (the reference's calc_accuracy)."),
    overall: Optional[str] = typer.Option(None, "--overall", help="Model side of Overall: sum, or a dimension (TA for GenAI-Bench)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Prefix of the report: <output>.md and <output>.ties.png."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the figures as JSON here."),
    calibrate: Optional[bool] = typer.Option(None, "--calibrate", help="Store per-dimension mean/std in the checkpoint."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="default, or reference: the leaderboard's sorted batches of 8 in bf16."),
    csv: Optional[str] = typer.Option(None, "--csv", help="Videos to calibrate on (video,prompt CSV), instead of --pairs."),
    model: Optional[str] = ModelOpt,
    base_model: Optional[str] = BaseModelOpt,
    checkpoint_step: Optional[int] = StepOpt,
    dtype: Optional[str] = DtypeOpt,
    device: Optional[str] = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    num_workers: Optional[int] = WorkersOpt,
    fps: Optional[float] = typer.Option(None, help="Frames sampled per second (default: the checkpoint's)."),
    max_pixels: Optional[int] = typer.Option(None, help="Upper bound on resized frame area (GenAI-Bench: 65536)."),
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Reward-model accuracy with and without ties on human-labelled pairs (paper Table 2), or --calibrate.

    \b
    videoalign bench reward --pairs videogen-rewardbench.csv --videos-root videos/ --json acc.json
    videoalign bench reward --calibrate --csv val_videos.csv --model my_checkpoint/
    accelerate launch --num_processes N -m videoalign bench reward --pairs ... --json acc.json
    """
    from videoalign.commands.bench_reward import RewardBenchConfig, run

    flags = dict(pairs=pairs, videos_root=videos_root, scores=scores, ties=ties, overall=overall, output=output,
                 json=json_out, calibrate=calibrate, protocol=protocol, csv=csv, model=model, base_model=base_model,
                 checkpoint_step=checkpoint_step, dtype=dtype, device=device, batch_size=batch_size,
                 num_workers=num_workers, fps=fps, max_pixels=max_pixels)
    cfg = _resolve(RewardBenchConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run, cfg))


@bench_app.command("winrate")
def bench_winrate(
    base: Optional[str] = typer.Option(None, "--base", help="Pretrained model: diffusers folder, hub id or tiny-random."),
    aligned: Optional[str] = typer.Option(None, "--aligned", help="Aligned model: a pipeline, or a LoRA (dpo/rwr final/) for --base."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompt file: CSV with a prompt column, or .txt."),
    base_videos: Optional[str] = typer.Option(None, "--base-videos", help="Existing base videos <i:05d>.mp4 instead of sampling."),
    aligned_videos: Optional[str] = typer.Option(None, "--aligned-videos", help="Existing aligned videos, named the same."),
    reward_model: Optional[str] = typer.Option(None, "--reward-model", help="VideoReward: hub id, folder or tiny-random."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Videos, scores, winrate.json/md/png; reruns resume."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N prompts of the file."),
    videos_per_prompt: Optional[int] = typer.Option(None, "--videos-per-prompt", help="K videos per prompt (seed + i*K + j)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Video j of prompt i samples from seed + i*K + j, both models."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Euler sampling steps (default 50)."),
    num_frames: Optional[int] = typer.Option(None, "--num-frames", help="Frames per video, 4k+1."),
    height: Optional[int] = typer.Option(None, "--height", help="Video height, a multiple of 16."),
    width: Optional[int] = typer.Option(None, "--width", help="Video width, a multiple of 16."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate written into the mp4s (Wan: 16)."),
    guidance_scale: Optional[float] = typer.Option(None, "--guidance-scale", help="Classifier-free guidance scale (default 5)."),
    tie_threshold: Optional[float] = typer.Option(None, "--tie-threshold", help="|aligned - base| <= this is a tie (default 0)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="VQ:MQ:TA weights of the Overall column (default 1:1:1)."),
    dtype: Optional[str] = typer.Option(None, help="auto (bfloat16 on CUDA, float32 on CPU), float32 or bfloat16."),
    device: Optional[str] = DeviceOpt,
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """VideoReward win rates (VQ, MQ, TA, Overall) of an aligned model against its base, same prompts and seeds;
    a tie counts half (paper Table 3). Scoring keys: --set reward.KEY=VALUE.

    \b
    videoalign bench winrate --recipe recipes/debug/bench_winrate.yaml --aligned tiny-random --prompts prompts.txt -o runs/wr
    1 GPU:  videoalign bench winrate --recipe recipes/bench/winrate_wan2_1_t2v_1_3b.yaml --aligned runs/dpo/final
    N GPUs: accelerate launch --num_processes N -m videoalign bench winrate --recipe recipes/bench/winrate_wan2_1_t2v_1_3b.yaml --aligned runs/dpo/final
    """
    from videoalign.commands.bench_winrate import WinrateConfig, run

    flags = {"base": base, "aligned": aligned, "prompts": prompts, "base_videos": base_videos,
             "aligned_videos": aligned_videos, "reward.model": reward_model, "output_dir": output_dir, "limit": limit,
             "videos_per_prompt": videos_per_prompt, "seed": seed, "steps": steps, "num_frames": num_frames,
             "height": height, "width": width, "fps": fps, "guidance_scale": guidance_scale,
             "tie_threshold": tie_threshold, "weights": weights, "dtype": dtype, "device": device}
    cfg = _resolve(WinrateConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run, cfg))


@speed_app.callback(invoke_without_command=True)
def bench_speed(
    ctx: typer.Context,
    quick: Optional[bool] = typer.Option(None, "--quick", help="Tiny models, CPU, few repetitions (< 5 min)."),
    device: Optional[str] = typer.Option(None, help="cpu (tiny models) or cuda (real-size, random weights)."),
    only: Optional[str] = typer.Option(None, help="Comma list of score,relabel,train-reward,dpo,guide."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="JSON, logs, suite.json, suite.md."),
    margin: Optional[float] = typer.Option(None, help="A check fails above target x (1 + margin) (default 0.15)."),
    gate: Optional[bool] = typer.Option(None, "--gate", help="Exit 1 when a check fails (CI)."),
    data: Optional[str] = typer.Option(None, "--data", help="Pair CSV of clips for score/relabel/train-reward."),
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Run every speed benchmark, each in its own process; print one table of figures against their targets.

    \b
    videoalign bench speed --quick --gate --output-dir bench-ci      (CI, 2 CPU cores)
    1 GPU: videoalign bench speed --device cuda --output-dir bench-gpu
    """
    if ctx.invoked_subcommand is not None:
        return
    from videoalign.commands.bench_speed import SpeedSuiteConfig, run_speed_suite

    flags = dict(quick=quick, device=device, only=only, output_dir=output_dir, margin=margin, gate=gate, data=data)
    cfg = _resolve(SpeedSuiteConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run_speed_suite, cfg))


@speed_app.command("score")
def bench_speed_score(
    csv: Optional[str] = typer.Option(None, "--csv", help="Videos to score (video,prompt or pair CSV)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Where to write the JSON figures."),
    model: Optional[str] = ModelOpt,
    base_model: Optional[str] = BaseModelOpt,
    dtype: Optional[str] = DtypeOpt,
    device: Optional[str] = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    num_workers: Optional[int] = WorkersOpt,
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Time `score`: clips/s, peak RSS, and total time / decode-and-resize-only time, in one run.

    \b
    videoalign bench speed score --csv videos.csv --model tiny-random --output bench_score.json
    """
    from videoalign.commands.bench import SpeedScoreConfig, run_speed_score

    flags = dict(csv=csv, output=output, model=model, base_model=base_model, dtype=dtype, device=device,
                 batch_size=batch_size, num_workers=num_workers)
    cfg = _resolve(SpeedScoreConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run_speed_score, cfg))


@speed_app.command("relabel")
def bench_speed_relabel(
    input: Optional[str] = typer.Option(None, "--input", help="Manifest or pair CSV to relabel."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Where to write the JSON figures."),
    model: Optional[str] = ModelOpt,
    dtype: Optional[str] = DtypeOpt,
    device: Optional[str] = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    num_workers: Optional[int] = WorkersOpt,
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Time `relabel` on a pair CSV from cold: videos/s, pairs/s, peak RSS.

    \b
    videoalign bench speed relabel --model tiny-random --output bench_relabel.json
    """
    from videoalign.commands.bench import SpeedRelabelConfig, run_speed_relabel

    flags = dict(input=input, output=output, model=model, dtype=dtype, device=device, batch_size=batch_size,
                 num_workers=num_workers)
    cfg = _resolve(SpeedRelabelConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run_speed_relabel, cfg))


@speed_app.command("train-reward")
def bench_speed_train_reward(
    train_csv: Optional[str] = typer.Option(None, "--train-csv", help="Training pairs."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Where to write the JSON figures."),
    base_model: Optional[str] = BaseModelOpt,
    steps: Optional[int] = typer.Option(None, help="Optimiser steps (the first is not timed)."),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    max_pixels: Optional[int] = typer.Option(None, help="Upper bound on resized frame area."),
    device: Optional[str] = DeviceOpt,
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Time train-reward steps: pairs/s and peak memory.

    \b
    videoalign bench speed train-reward --base-model tiny-random --output bench_train.json
    """
    from videoalign.commands.bench import SpeedTrainRewardConfig, run_speed_train_reward

    flags = dict(train_csv=train_csv, output=output, base_model=base_model, steps=steps,
                 gradient_checkpointing=gradient_checkpointing, max_pixels=max_pixels, device=device)
    cfg = _resolve(SpeedTrainRewardConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run_speed_train_reward, cfg))


@speed_app.command("dpo")
def bench_speed_dpo(
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Where to write the JSON figures."),
    model: Optional[str] = typer.Option(None, help="tiny-random, or wan2.1-1.3b-random (the 1.3B architecture, random weights)."),
    num_frames: Optional[int] = typer.Option(None, help="Frames per clip, 4k+1 (default: 9 tiny, 33 Wan)."),
    height: Optional[int] = typer.Option(None, help="Clip height, a multiple of 16."),
    width: Optional[int] = typer.Option(None, help="Clip width, a multiple of 16."),
    batch_size: Optional[int] = typer.Option(None, help="Pairs per step."),
    steps: Optional[int] = typer.Option(None, help="Timed steps per variant, after one warm-up step."),
    dtype: Optional[str] = typer.Option(None, help="auto (bfloat16 on CUDA, float32 on CPU), float32 or bfloat16."),
    device: Optional[str] = DeviceOpt,
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    lora_rank: Optional[int] = typer.Option(None, help="LoRA rank (alpha = 2 x rank; default: 2 tiny, 64 Wan)."),
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Time one Flow-DPO step and its peak memory: ours (one LoRA model, adapter-off reference, concatenated
    forward) against the paper pseudo-code's (a frozen reference copy, four forwards), in one process.

    \b
    videoalign bench speed dpo --model tiny-random --output bench_dpo.json
    1 GPU: videoalign bench speed dpo --recipe recipes/bench/speed_dpo.yaml --output bench_dpo.json
    """
    from videoalign.commands.bench_dpo import SpeedDpoConfig, run_speed_dpo

    flags = dict(output=output, model=model, num_frames=num_frames, height=height, width=width,
                 batch_size=batch_size, steps=steps, dtype=dtype, device=device,
                 gradient_checkpointing=gradient_checkpointing, lora_rank=lora_rank)
    cfg = _resolve(SpeedDpoConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run_speed_dpo, cfg))


@app.command()
def guide(
    prompt: Optional[str] = typer.Option(None, "--prompt", help="One prompt to sample."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompt file: CSV with a prompt column, or .txt."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N prompts of the file."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Per-dimension weights, e.g. 0.1:0.1:0.8 or TA=1."),
    scale: Optional[float] = typer.Option(None, "--scale", help="Guidance scale W >= 0 (paper: 100; 0 = unguided)."),
    cfg_scale: Optional[float] = typer.Option(None, "--cfg", help="Classifier-free guidance scale (default 5)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Euler sampling steps (default 50)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Prompt i samples from seed + i."),
    latent_rm: Optional[str] = typer.Option(None, "--latent-rm", help="Latent reward model folder (train-latent-rm)."),
    model: Optional[str] = GenModelOpt,
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="mp4s and guide.jsonl; reruns resume."),
    compare: Optional[bool] = typer.Option(None, "--compare", help="Also the unguided sample: side-by-side mp4, PNG strip."),
    device: Optional[str] = DeviceOpt,
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Flow-NRG: sample with the velocity shifted by a latent reward model's gradient, v - W t/(1-t) grad r.

    \b
    videoalign guide --prompt "a cat" --latent-rm runs/latent_rm/final --weights 0.1:0.1:0.8 --scale 100 --compare
    1 GPU:  videoalign guide --recipe recipes/guide/wan2_1_t2v_1_3b.yaml --latent-rm runs/latent_rm/final --weights 0.1:0.1:0.8
    N GPUs: accelerate launch --num_processes N -m videoalign guide --recipe recipes/guide/wan2_1_t2v_1_3b.yaml --latent-rm runs/latent_rm/final
    """
    from videoalign.commands.guide import GuideConfig, run

    flags = dict(prompt=prompt, prompts=prompts, limit=limit, weights=weights, scale=scale, guidance_scale=cfg_scale,
                 steps=steps, seed=seed, latent_rm=latent_rm, model=model, output_dir=output_dir, compare=compare,
                 device=device)
    cfg = _resolve(GuideConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run, cfg))


@speed_app.command("guide")
def bench_speed_guide(
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Where to write the JSON figures."),
    model: Optional[str] = typer.Option(None, help="tiny-random, or wan2.1-1.3b-random (the 1.3B architecture, random weights)."),
    num_frames: Optional[int] = typer.Option(None, help="Frames per clip, 4k+1 (default: 9 tiny, 81 Wan)."),
    height: Optional[int] = typer.Option(None, help="Clip height, a multiple of 16."),
    width: Optional[int] = typer.Option(None, help="Clip width, a multiple of 16."),
    k: Optional[int] = typer.Option(None, "--k", help="Latent reward model blocks (default 4)."),
    num_layers: Optional[int] = typer.Option(None, "--num-layers", help="tiny-random's depth (default 30, as Wan2.1-1.3B)."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps per run (the first is not timed)."),
    repeats: Optional[int] = typer.Option(None, help="Runs per variant, alternating; the first is a warm-up."),
    dtype: Optional[str] = typer.Option(None, help="auto (bfloat16 on CUDA, float32 on CPU), float32 or bfloat16."),
    device: Optional[str] = DeviceOpt,
    recipe: Optional[Path] = RecipeOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Time one Flow-NRG sampling step, guided against unguided (target ratio <= 1.5), in one process.

    \b
    videoalign bench speed guide --model tiny-random --output bench_guide.json
    1 GPU: videoalign bench speed guide --recipe recipes/bench/speed_guide.yaml --output bench_guide.json
    """
    from videoalign.commands.bench_guide import SpeedGuideConfig, run_speed_guide

    flags = dict(output=output, model=model, num_frames=num_frames, height=height, width=width, k=k,
                 num_layers=num_layers, steps=steps, repeats=repeats, dtype=dtype, device=device)
    cfg = _resolve(SpeedGuideConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run_speed_guide, cfg))
