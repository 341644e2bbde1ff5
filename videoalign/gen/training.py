"""Training on a generator's latents: the parts dpo, rwr and train-latent-rm share around the trainer.

- `draw_noise`: the (t, noise) of every item, a function of (seed, step, position in the step's global batch), so a
  resumed run continues exactly and one process with batch 2 equals two processes with batch 1;
- `prepare_cache`: the latent cache (sharded over processes, resumable), and the items whose videos could not be
  encoded, reported and skipped (`drop_unencoded`);
- `run_alignment`: Flow-DPO and Flow-RWR (commands dpo and rwr) on LoRA or full fine-tuning, through the trainer,
  with validation samples (`sample_validation`) and the export (`export`: the LoRA in diffusers' format, or the
  whole transformer; `merge` also writes the fused pipeline).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from videoalign.gen.settings import AlignConfig, LatentTrainingConfig


def step_seed(seed: int, step: int, position: int) -> int:
    """Seed of the (t, noise) of the item at global position `position` of optimiser step `step`."""
    return (seed * 1_000_003 + step * 10_007 + position) % (2**63 - 1)


def draw_noise(cfg: LatentTrainingConfig, step: int, positions: list[int], shape: tuple[int, ...]):
    """(t (B,), noise (B, *shape)) for the given global positions; independent of batch size and world size."""
    from videoalign.flow import sample_timesteps

    ts, noises = [], []
    shift = cfg.family.default_shift if cfg.shift is None else cfg.shift
    for pos in positions:
        g = torch.Generator().manual_seed(step_seed(cfg.seed, step, pos))
        ts.append(sample_timesteps(1, shift, cfg.timestep_sampling, cfg.logit_mean, cfg.logit_std, g))
        noises.append(torch.randn(shape, generator=g))
    return torch.cat(ts), torch.stack(noises)


def prepare_cache(cfg: LatentTrainingConfig, gen, videos: list[Path], prompts: list[str], accelerator):
    """Encode what is missing (sharded over processes), then return the cache and {video: error} of failures."""
    from videoalign.gen.latent_cache import CacheSpec, LatentCache, OnTheFlyLatents
    from videoalign.log import console, progress

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


@dataclass
class Parts:
    """What an alignment loss needs: the generator, the trainable module (maybe DDP-wrapped), the plain
    transformer, for full fine-tuning DPO a frozen reference copy, and whether FSDP2 shards the transformer."""

    gen: object
    model: torch.nn.Module
    transformer: torch.nn.Module
    reference: torch.nn.Module | None = None
    sharded: bool = False


def sample_validation(cfg: AlignConfig, gen, texts, negative, out_dir: Path, write: bool = True) -> list[Path]:
    """One mp4 per (prompt, seed) with the current weights (the trainer swaps the EMA ones in); fixed seeds, so runs
    and steps are comparable. Under FSDP every rank samples; only the writer writes."""
    from videoalign.distributed import reshard
    from videoalign.video import write_video

    shape = gen.family.latent_shape(cfg.num_frames, cfg.height, cfg.width)
    written = []
    was_training = gen.transformer.training
    gen.transformer.eval()
    for i, text in enumerate(texts):
        for seed in cfg.validation_seeds:
            latents = gen.sample(text[None], [seed], shape, cfg.sample_steps, cfg.shift, cfg.guidance_scale,
                                 negative[None] if negative is not None else None)
            if write:
                frames = gen.decode(latents)[0]
                written.append(write_video(out_dir / f"prompt{i:03d}-seed{seed}.mp4", frames, cfg.sample_fps))
    reshard(gen.transformer)  # FSDP2: before the EMA swap back and the next training step
    gen.transformer.train(was_training)
    return written


def export(cfg: AlignConfig, parts: Parts, out: Path, main: bool = True) -> None:
    """final/: the LoRA in diffusers format (or the full transformer); merged/: the LoRA fused, as a pipeline.
    Under FSDP every rank calls it, to gather the whole weights from all ranks' shards; the main rank writes."""
    from peft.utils import get_peft_model_state_dict

    from videoalign.distributed import full_tensors, reshard, unsharded_copy
    from videoalign.gen.generator import load_generator, save_pipeline
    from videoalign.gen.lora import load_lora, save_lora
    from videoalign.log import console
    from videoalign.trainer import trainable_params

    transformer = parts.transformer
    reshard(transformer)  # FSDP2: the shards, not gathered tensors left by a forward without backward
    params = trainable_params(transformer)
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


def _trainable_transformer(cfg: AlignConfig, gen, needs_reference: bool):
    """LoRA (A drawn from cfg.seed, identical on every rank and run) or full fine-tuning (and a frozen reference
    copy when the loss needs one); float32 masters of the trainable weights; gradient checkpointing."""
    from videoalign.gen.lora import add_lora

    transformer, reference = gen.transformer, None
    torch.manual_seed(cfg.seed)
    if cfg.lora.enabled:
        add_lora(transformer, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.dropout)
    else:
        if needs_reference:
            reference = copy.deepcopy(transformer).requires_grad_(False).eval()
        transformer.requires_grad_(True)
    for p in transformer.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    return transformer, reference


def run_alignment(cfg: AlignConfig, name: str, items: list, videos_of, loss, accelerator, problems: list[str],
                  needs_reference: bool = False, extra: str = "") -> int:
    """Cache, build, train (trainer.py), sample, export: dpo and rwr. `loss(parts, cache, batch, step_items, t,
    noise) -> (loss, stats)`; `videos_of(item)` lists an item's videos; `extra` adds to the data report (", N
    repeated rows kept"). Exit code 0."""
    from transformers import get_constant_schedule_with_warmup

    from videoalign.config import write_resolved
    from videoalign.distributed import is_sharded
    from videoalign.gen.generator import load_generator
    from videoalign.trainer import Objective, Trainer, report_data, trainable_params

    main, world = accelerator.is_main_process, accelerator.num_processes
    sharded = is_sharded(accelerator)  # FSDP2: parameters become DTensor shards in prepare
    if sharded and getattr(cfg, "backward", "joint") == "split":  # dpo's split reads p.grad between its passes
        raise ValueError("backward: split needs gradients that FSDP reduces only after the last pass; use joint")
    out = Path(cfg.output_dir)
    write_resolved(cfg, out / "resolved_recipe.yaml", main)

    # 1. Model and latent cache; items whose videos could not be encoded are skipped and counted.
    gen = load_generator(cfg.model, cfg.dtype, accelerator.device)  # tiny-random: always the same seed-0 model
    videos = [v for item in items for v in videos_of(item)]
    cache, errors = prepare_cache(cfg, gen, videos, [item.prompt for item in items], accelerator)
    items = drop_unencoded(cfg.data, items, videos_of, cache, errors, problems)
    report_data(cfg, f"{name} items", items, problems, world, main, cfg.data, extra, " (FSDP2)" if sharded else "")

    # 2. Validation prompts are encoded now; the text encoder then leaves the accelerator.
    val_texts = negative = None
    if cfg.validation_prompts:
        val_texts = gen.pad_text(gen.encode_prompts(cfg.validation_prompts))
        negative = gen.pad_text(gen.encode_prompts([cfg.negative_prompt]))[0]
    gen.text_encoder.to("cpu")

    # 3. Trainable weights (float32 masters), optimiser, schedule; DDP or FSDP2 through accelerate.
    transformer, reference = _trainable_transformer(cfg, gen, needs_reference)
    optimizer = torch.optim.AdamW(list(trainable_params(transformer).values()), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    scheduler = get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)  # stepped once per step
    model, optimizer = accelerator.prepare(transformer, optimizer)
    parts = Parts(gen, model, transformer, reference, sharded)
    shape = gen.family.latent_shape(cfg.num_frames, cfg.height, cfg.width)

    def objective_loss(batch, step, positions, step_items):
        t, noise = draw_noise(cfg, step, positions, shape)
        return loss(parts, cache, batch, step_items, t, noise)

    def evaluate(step: int, final: bool):
        if val_texts is not None and (main or sharded):
            folder = out / "samples" / ("final" if final else f"step-{step}")
            sample_validation(cfg, gen, val_texts, negative, folder, write=main)
        return None

    def finish():
        if main or sharded:
            export(cfg, parts, out, main)

    objective = Objective(name, items, objective_loss)
    Trainer(cfg, accelerator, objective, model, transformer, optimizer, scheduler, evaluate=evaluate,
            eval_every=cfg.validate_every, finish=finish, sharded=sharded).fit()
    return 0
