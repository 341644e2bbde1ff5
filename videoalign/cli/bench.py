"""`videoalign bench reward | winrate | speed [score | relabel | train-reward | dpo | guide]`: one short Typer
function per command, heavy imports inside each."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from videoalign.cli.base import (
    BaseModelOpt,
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    RecipeOpt,
    SetOpt,
    StepOpt,
    WorkersOpt,
    _guard,
    _resolve,
    bench_app,
    speed_app,
)


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
    from videoalign.commands.bench.reward import RewardBenchConfig, run

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
    from videoalign.commands.bench.winrate import WinrateConfig, run

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
    from videoalign.commands.bench.speed import SpeedSuiteConfig, run_speed_suite

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
    from videoalign.commands.bench.speed_score import SpeedScoreConfig, run_speed_score

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
    from videoalign.commands.bench.speed_score import SpeedRelabelConfig, run_speed_relabel

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
    from videoalign.commands.bench.speed_score import SpeedTrainRewardConfig, run_speed_train_reward

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
    from videoalign.commands.bench.speed_dpo import SpeedDpoConfig, run_speed_dpo

    flags = dict(output=output, model=model, num_frames=num_frames, height=height, width=width,
                 batch_size=batch_size, steps=steps, dtype=dtype, device=device,
                 gradient_checkpointing=gradient_checkpointing, lora_rank=lora_rank)
    cfg = _resolve(SpeedDpoConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run_speed_dpo, cfg))


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
    from videoalign.commands.bench.speed_guide import SpeedGuideConfig, run_speed_guide

    flags = dict(output=output, model=model, num_frames=num_frames, height=height, width=width, k=k,
                 num_layers=num_layers, steps=steps, repeats=repeats, dtype=dtype, device=device)
    cfg = _resolve(SpeedGuideConfig, recipe, flags, set_)
    raise typer.Exit(_guard(run_speed_guide, cfg))
