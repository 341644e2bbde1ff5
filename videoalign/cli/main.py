"""`videoalign score | train-reward | relabel | dpo | rwr | train-latent-rm | guide`: one short Typer function per
command, heavy imports inside each (so `--help` does not import torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from videoalign.cli.base import (
    AccumOpt,
    AlignOutOpt,
    BaseModelOpt,
    BatchOpt,
    DataOpt,
    DeviceOpt,
    DtypeOpt,
    GenModelOpt,
    LrOpt,
    MaxStepsOpt,
    MergeOpt,
    ModelOpt,
    RecipeOpt,
    ResumeOpt,
    SetOpt,
    StepOpt,
    WorkersOpt,
    _fail,
    _guard,
    _resolve,
    app,
)


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
