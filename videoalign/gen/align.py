"""Training mechanics shared by `videoalign dpo` and `videoalign rwr`: config, latent cache, LoRA or full
fine-tuning, the loop, checkpoints and resume, EMA, validation samples, LoRA export and merge.

Data order and noise are functions of (seed, step): step s takes the global batch `step_indices(s)`, rank r
takes every world-th item of it, and the (t, noise) of the item at global position j of step s come from
torch.Generator().manual_seed(hash(seed, s, j)). So resuming at step s continues exactly, and one process with
batch 2 equals two processes with batch 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from videoalign.gen.generator import DEFAULT_MODEL, WAN_LORA_TARGETS


@dataclass
class LoraSettings:
    #: false = full fine-tuning of the transformer (DPO then keeps a frozen copy as the reference)
    enabled: bool = True
    #: LoRA rank r (paper Table 10: 64)
    rank: int = 64
    #: LoRA alpha (paper: 128); the update is alpha / r * B A
    alpha: float = 128.0
    #: dropout on the LoRA input
    dropout: float = 0.0
    #: module names (or suffixes) to adapt; default: q/k/v/o of self- and cross-attention
    targets: list[str] = field(default_factory=lambda: list(WAN_LORA_TARGETS))


@dataclass
class ClipDataConfig:
    """Fields shared by the commands that train on cached latents of a pair file (dpo, rwr, train-latent-rm)."""

    #: pair file: relabel's pairs JSONL or a reference pair CSV (rwr also takes score's JSONL)
    data: str | None = None
    #: folder the data file's relative video paths are relative to (default: the file's folder)
    videos_root: str | None = None
    #: where metrics.jsonl, checkpoints/, samples/ and final/ go
    output_dir: str = "runs/align"
    #: latent cache folder (default: <output_dir>/cache); share one between runs to encode once
    cache_dir: str | None = None
    #: false = encode every clip and prompt on the fly at every step (no cache; for checks and one-off runs)
    latent_cache: bool = True
    #: diffusers text-to-video model: hub id, folder or tiny-random
    model: str = DEFAULT_MODEL
    #: transformer and text-encoder dtype (the VAE stays float32); float16 is refused for Wan
    dtype: Literal["bfloat16", "float32", "float16"] = "bfloat16"
    #: frames per training clip; Wan needs 4k+1
    num_frames: int = 81
    #: training resolution (multiples of 16)
    height: int = 480
    width: int = 832
    #: frame rate the clips are read at (null: consecutive source frames)
    fps: float | None = None
    #: crop = scale to cover and centre-crop; stretch = resize to height x width
    resize: Literal["crop", "stretch"] = "crop"


@dataclass
class AlignConfig(ClipDataConfig):
    lora: LoraSettings = field(default_factory=LoraSettings)
    #: AdamW learning rate (paper: 5e-6); >= 1e-4 has collapsed LoRA DPO runs
    learning_rate: float = 5e-6
    weight_decay: float = 0.0
    #: linear warm-up steps, then constant
    warmup_steps: int = 0
    #: clip the global gradient norm (null = no clipping)
    max_grad_norm: float | None = 1.0
    #: pairs (dpo) or videos (rwr) per process per micro-step
    batch_size: int = 1
    #: micro-steps per optimiser step
    grad_accum: int = 1
    #: passes over the data (ignored when max_steps is set)
    epochs: int = 1
    max_steps: int | None = None
    #: training timesteps: logit_normal (SD3, the default) or uniform (the paper's pseudo-code)
    timestep_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    #: flow shift s (null: the model family's, 3.0 for Wan 480p)
    shift: float | None = None
    #: recompute activations in backward to save memory
    gradient_checkpointing: bool = False
    #: keep an exponential moving average of the trainable weights (exported instead of the live ones)
    ema_decay: float | None = None
    #: write a resumable checkpoint every N steps (0 = never)
    save_every: int = 0
    log_every: int = 1
    #: sample the validation prompts to mp4 every N steps (0 = never; the end of training always, if any)
    validate_every: int = 0
    validation_prompts: list[str] = field(default_factory=list)
    #: one video per (prompt, seed)
    validation_seeds: list[int] = field(default_factory=lambda: [0])
    sample_steps: int = 50
    guidance_scale: float = 5.0
    negative_prompt: str = ""
    #: fps written into the sample mp4s
    sample_fps: float = 16.0
    seed: int = 42
    num_workers: int = 2
    device: str = "auto"
    #: continue from the newest checkpoint in output_dir
    resume: bool = False
    #: also save the transformer with the LoRA fused in (output_dir/merged, a diffusers pipeline folder)
    merge: bool = False

    def __post_init__(self):
        family = check_training_fields(self, ("batch_size", "grad_accum", "epochs", "log_every", "sample_steps"))
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.lora.enabled:
            if self.lora.rank < 1:
                raise ValueError(f"lora.rank must be >= 1, got {self.lora.rank}")
            if problem := family.check_lora_targets(self.lora.targets):
                raise ValueError(f"lora.targets: {problem}")


def check_training_fields(cfg, positive: tuple[str, ...]):
    """The checks every latent-training config shares (dpo, rwr, train-latent-rm): a data file, the named
    counts >= 1, max_steps, and the model family's dtype, frame count (Wan: 4k+1) and size (multiples of 16).
    Raises ValueError naming the field; returns the family (generator.Family)."""
    from videoalign.gen.generator import family_of

    if not cfg.data:
        raise ValueError("data is required: a pair JSONL from videoalign relabel or a reference pair CSV")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {cfg.max_steps}")
    family = family_of(cfg.model)
    if cfg.dtype in family.refused_dtypes:
        raise ValueError(f"dtype: {family.refused_dtypes[cfg.dtype]}")
    family.check_clip(cfg.num_frames, cfg.height, cfg.width)
    return family


def step_seed(seed: int, step: int, position: int) -> int:
    """Seed of the (t, noise) of the item at global position `position` of optimiser step `step`."""
    return (seed * 1_000_003 + step * 10_007 + position) % (2**63 - 1)


def draw_noise(cfg, family, step: int, positions: list[int], shape: tuple[int, ...]):
    """(t (B,), noise (B, *shape)) for the given global positions; independent of batch size and world size.
    cfg: any config with seed, shift, timestep_sampling, logit_mean and logit_std (AlignConfig,
    TrainLatentRmConfig)."""
    from videoalign.flow import sample_timesteps

    ts, noises = [], []
    shift = family.default_shift if cfg.shift is None else cfg.shift
    for pos in positions:
        g = torch.Generator().manual_seed(step_seed(cfg.seed, step, pos))
        ts.append(sample_timesteps(1, shift, cfg.timestep_sampling, cfg.logit_mean, cfg.logit_std, g))
        noises.append(torch.randn(shape, generator=g))
    return torch.cat(ts), torch.stack(noises)


@dataclass
class Parts:
    """What a command's objective needs: the generator, the trainable module (maybe DDP-wrapped), the plain
    transformer, for full fine-tuning DPO a frozen reference copy, and whether FSDP2 shards the transformer."""

    gen: object
    model: torch.nn.Module
    transformer: torch.nn.Module
    reference: torch.nn.Module | None = None
    sharded: bool = False


class Ema:
    """Exponential moving average of the trainable parameters, in float32."""

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.nn.Parameter]) -> None:
        for n, p in params.items():
            self.shadow[n].lerp_(p.detach().float(), 1 - self.decay)

    @torch.no_grad()
    def swap(self, params: dict[str, torch.nn.Parameter]) -> None:
        """Exchange live and averaged weights (call twice to restore)."""
        for n, p in params.items():
            live = p.detach().float().clone()
            p.copy_(self.shadow[n].to(p.dtype))
            self.shadow[n] = live


def trainable_params(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def prepare_cache(cfg, gen, videos: list[Path], prompts: list[str], accelerator, console):
    """Encode what is missing (sharded over processes), then return the cache and {video: error} of failures.
    cfg: any config with AlignConfig's model, clip (num_frames, height, width, fps, resize), latent_cache,
    cache_dir, output_dir and num_workers fields."""
    from videoalign.gen.latent_cache import CacheSpec, LatentCache, OnTheFlyLatents
    from videoalign.log import progress

    spec = CacheSpec(cfg.model, cfg.num_frames, cfg.height, cfg.width, cfg.fps, cfg.resize, gen.text_max_length)
    if not cfg.latent_cache:
        return OnTheFlyLatents(gen, spec), {}
    cache = LatentCache(cfg.cache_dir or Path(cfg.output_dir) / "cache", spec)
    todo = cache.todo_count(videos, prompts)
    main = accelerator.is_main_process
    if todo:
        if main:
            console.print(f"encoding {todo} videos/prompts into {cache.root}", highlight=False)
        with progress(todo, "caching latents", enabled=main) as bar:
            cache.build(gen, videos, prompts, accelerator.process_index, accelerator.num_processes,
                        cfg.num_workers, bar if main else None)
    accelerator.wait_for_everyone()
    errors = {v: e for v, e in cache.errors().items() if not cache.has_video(Path(v))}
    return cache, errors


def drop_unencoded(data, items: list, videos_of, cache, errors: dict, problems: list[str]) -> list:
    """The items whose videos are all in the cache; for each other item, a "<data> line N: <error>" problem."""
    usable = []
    for item in items:
        bad = [errors.get(str(Path(v).resolve()), f"{v}: not encoded") for v in videos_of(item)
               if not cache.has_video(v)]
        if bad:
            problems.append(f"{data} line {item.line}: {bad[0]}")
        else:
            usable.append(item)
    return usable


def write_metrics(path: Path, record: dict) -> None:
    from videoalign.data import append_jsonl

    append_jsonl(path, [{"time": round(time.time(), 3), **record}])


def sample_validation(cfg: AlignConfig, gen, texts, negative, out_dir: Path, ema=None, params=None,
                      write: bool = True) -> list[Path]:
    """One mp4 per (prompt, seed) with the weights that would be exported (the EMA ones when there is an EMA);
    fixed seeds, so runs and steps are comparable. Under FSDP every rank samples; only the writer writes."""
    from videoalign.distributed import reshard
    from videoalign.video import write_video

    shape = gen.family.latent_shape(cfg.num_frames, cfg.height, cfg.width)
    written = []
    was_training = gen.transformer.training
    gen.transformer.eval()
    if ema is not None:
        ema.swap(params)
    for i, text in enumerate(texts):
        for seed in cfg.validation_seeds:
            latents = gen.sample(text[None], [seed], shape, cfg.sample_steps, cfg.shift, cfg.guidance_scale,
                                 negative[None] if negative is not None else None)
            if write:
                frames = gen.decode(latents)[0]
                written.append(write_video(out_dir / f"prompt{i:03d}-seed{seed}.mp4", frames, cfg.sample_fps))
    reshard(gen.transformer)  # FSDP2: before the EMA swap back and the next training step
    if ema is not None:
        ema.swap(params)
    gen.transformer.train(was_training)
    return written


def export(cfg: AlignConfig, parts: Parts, out: Path, ema: Ema | None, console, main: bool = True) -> None:
    """final/: the LoRA in diffusers format (or the full transformer); merged/: the LoRA fused, as a pipeline.
    Under FSDP every rank calls it, to gather the whole weights from all ranks' shards; the main rank writes."""
    from peft.utils import get_peft_model_state_dict

    from videoalign.distributed import full_tensors, reshard, unsharded_copy
    from videoalign.gen.generator import load_generator, load_lora, save_lora, save_pipeline

    transformer = parts.transformer
    reshard(transformer)  # FSDP2: the shards, not gathered tensors left by a forward without backward
    params = trainable_params(transformer)
    if ema is not None:
        ema.swap(params)
    # under FSDP a collective: the trainable tensors (LoRA, renamed as lora_state does) or the whole state dict
    whole = full_tensors(params if cfg.lora.enabled else transformer.state_dict(), main) if parts.sharded else None
    if not main:
        return
    final = out / "final"
    if cfg.lora.enabled:
        file = save_lora(transformer, final, whole and get_peft_model_state_dict(transformer, state_dict=whole))
        console.print(f"saved LoRA {file} (load with pipe.load_lora_weights)", highlight=False)
        if cfg.merge:
            if parts.sharded:  # fusing the shards in place would need every rank: fuse the file into a fresh copy
                save_pipeline(load_lora(load_generator(cfg.model, cfg.dtype), final, fuse=True), out / "merged")
            else:
                transformer.fuse_lora()
                transformer.unload_lora()
                save_pipeline(parts.gen, out / "merged")
            console.print(f"saved merged pipeline {out / 'merged'}", highlight=False)
    else:
        plain = transformer if whole is None else unsharded_copy(transformer, whole)
        plain.save_pretrained(str(final / "transformer"))
        console.print(f"saved transformer {final / 'transformer'}", highlight=False)


@dataclass
class Objective:
    """How a command turns a micro-batch into a loss.

    items: the training records (pairs or videos); videos(item) / prompt(item) name what the cache must hold;
    loss(parts, cache, batch, global_batch, t, noise) -> (scalar loss, {stat: (B,) tensor}), where batch is this
    rank's items, global_batch the whole step's (for batch-normalised weights) and (t, noise) are per item."""

    name: str
    items: list
    videos: object
    prompt: object
    loss: object
    needs_reference: bool = False


def run_training(cfg: AlignConfig, objective: Objective, accelerator, problems: list[str]) -> int:
    """Cache, build, train, checkpoint, sample, export. Exit code 0."""
    import copy

    import yaml
    from transformers import get_constant_schedule_with_warmup

    from videoalign import checkpoint
    from videoalign.commands.train_reward import step_indices
    from videoalign.config import config_to_dict
    from videoalign.data import write_atomic
    from videoalign.distributed import full_optimizer_state, full_tensors, is_sharded, shard_like
    from videoalign.gen.generator import add_lora, load_generator
    from videoalign.log import console, progress

    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    sharded = is_sharded(accelerator)  # FSDP2: parameters become DTensor shards in prepare
    if sharded and getattr(cfg, "backward", "joint") == "split":  # dpo's split reads p.grad between its passes
        raise ValueError("backward: split needs gradients that FSDP reduces only after the last pass; use joint")
    out = Path(cfg.output_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "resolved_recipe.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    # 1. Model and latent cache; pairs whose videos could not be encoded are skipped and counted.
    gen = load_generator(cfg.model, cfg.dtype, accelerator.device)  # tiny-random: always the same seed-0 model
    items = objective.items
    videos = [v for item in items for v in objective.videos(item)]
    cache, errors = prepare_cache(cfg, gen, videos, [objective.prompt(i) for i in items], accelerator, console)
    items = drop_unencoded(cfg.data, items, objective.videos, cache, errors, problems)
    global_batch = cfg.batch_size * cfg.grad_accum * world
    if main:
        for problem in problems:
            console.print(f"[yellow]skipped:[/] {problem}", highlight=False)
    if len(items) < global_batch:
        raise ValueError(f"{cfg.data}: {len(items)} usable {objective.name} items ({len(problems)} skipped), fewer "
                         f"than one global batch ({cfg.batch_size} x {cfg.grad_accum} x {world} processes)")
    total_steps = cfg.max_steps or cfg.epochs * (len(items) // global_batch)
    if main:
        console.print(f"{len(items)} {objective.name} items ({len(problems)} skipped), {total_steps} steps of "
                      f"{global_batch} on {world} process(es){' (FSDP2)' if sharded else ''}", highlight=False)

    # 2. Validation prompts are encoded now; the text encoder then leaves the accelerator.
    val_texts = negative = None
    if cfg.validation_prompts:
        val_texts = gen.pad_text(gen.encode_prompts(cfg.validation_prompts))
        negative = gen.pad_text(gen.encode_prompts([cfg.negative_prompt]))[0]
    gen.text_encoder.to("cpu")

    # 3. Trainable weights (float32 masters), optimiser, schedule; DDP or FSDP2 through accelerate.
    transformer = gen.transformer
    reference = None
    torch.manual_seed(cfg.seed)  # LoRA A init: identical on every rank and run
    if cfg.lora.enabled:
        add_lora(transformer, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.dropout)
    else:
        if objective.needs_reference:
            reference = copy.deepcopy(transformer).requires_grad_(False).eval()
        transformer.requires_grad_(True)
    for p in transformer.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    params = trainable_params(transformer)
    optimizer = torch.optim.AdamW(list(params.values()), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)  # stepped once per step, below
    model, optimizer = accelerator.prepare(transformer, optimizer)
    params = trainable_params(transformer)  # FSDP2 replaced the parameters by DTensor shards; DDP keeps them
    parts = Parts(gen, model, transformer, reference, sharded)
    ema = Ema(params, cfg.ema_decay) if cfg.ema_decay else None

    start_step = 0
    if cfg.resume and (last := checkpoint.latest(out)) is not None:
        state = checkpoint.load(last, transformer, optimizer.optimizer, scheduler, rank, sharded and shard_like)
        start_step = state["step"]
        if state.get("items", len(items)) != len(items) or state.get("global_batch", global_batch) != global_batch:
            raise ValueError(f"{last}: written for {state.get('items')} items in global batches of "
                             f"{state.get('global_batch')}, but this run has {len(items)} and {global_batch}; resume "
                             "with the same data and batch settings, or use a new output_dir")
        if ema is not None and state.get("tensors"):
            ema.shadow = {n: shard_like(t.float(), params[n]) for n, t in state["tensors"].items()}
        if main:
            console.print(f"resumed from {last} at step {start_step}", highlight=False)

    # 4. Loop: step s = grad_accum micro-steps of batch_size items on every rank.
    metrics_path = out / "metrics.jsonl"
    shape = gen.family.latent_shape(cfg.num_frames, cfg.height, cfg.width)
    with progress(total_steps - start_step, f"{objective.name} training", enabled=main) as bar:
        for step in range(start_step, total_steps):
            order = step_indices(step, len(items), global_batch, cfg.seed)
            positions = list(range(rank, global_batch, world))
            step_stats: dict[str, list] = {}
            for m in range(cfg.grad_accum):
                mine = positions[m * cfg.batch_size:(m + 1) * cfg.batch_size]
                batch = [items[order[j]] for j in mine]
                t, noise = draw_noise(cfg, gen.family, step, mine, shape)
                with accelerator.accumulate(model):
                    loss, stats = objective.loss(parts, cache, batch, [items[i] for i in order], t, noise)
                    if loss.requires_grad:  # else the objective ran its own backward passes (dpo backward: split)
                        accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                step_stats.setdefault("loss", []).append(loss.detach().reshape(1))
                for k, v in stats.items():
                    step_stats.setdefault(k, []).append(v.detach().float().reshape(-1))
            scheduler.step()
            if ema is not None:
                ema.update(params)
            done = step + 1
            record = {"step": done, "lr": scheduler.get_last_lr()[0]}
            for k, v in step_stats.items():
                record[k] = accelerator.gather(torch.cat(v).to(accelerator.device)).float().mean().item()
            bar.advance(1)
            if main and done % cfg.log_every == 0:
                write_metrics(metrics_path, record)
            if cfg.save_every and done % cfg.save_every == 0:  # whole tensors: gathered by every rank under FSDP
                extra = {"objective": objective.name, "items": len(items), "global_batch": global_batch}
                checkpoint.save(out, done, full_tensors(params, main),
                                full_optimizer_state(optimizer.optimizer, main), scheduler, extra, rank, world,
                                accelerator.wait_for_everyone, full_tensors(ema.shadow, main) if ema else None)
            if (main or sharded) and val_texts is not None and cfg.validate_every and done % cfg.validate_every == 0:
                sample_validation(cfg, gen, val_texts, negative, out / "samples" / f"step-{done}", ema, params, main)
            accelerator.wait_for_everyone()

    # 5. Final samples and export: rank 0 writes (under FSDP every rank samples and gathers with it).
    if main or sharded:
        if val_texts is not None:
            sample_validation(cfg, gen, val_texts, negative, out / "samples" / "final", ema, params, main)
        export(cfg, parts, out, ema, console, main)
    accelerator.wait_for_everyone()
    return 0
