"""The one training loop, for train-reward, dpo, rwr and train-latent-rm (docs/design.md, The trainer).

A command builds its parts (the model, its optimiser and schedule, the training items) and hands the trainer an
`Objective`: a loss over a micro-batch of items. The trainer owns everything else:
- the output folder: a folder that already holds a run is refused unless `resume` (continue it) or `overwrite`
  (delete the run's outputs, keep the latent cache) is set; checked before any model loads (`check_output_dir`);
- data order as a function of (seed, step): optimiser step s takes the global batch `step_indices(s)` (epoch-wise
  seeded permutations, the last partial batch of each epoch dropped) and rank r takes every world-th item of it,
  so one process with batch 2 sees what two processes with batch 1 see;
- accumulation (grad_accum micro-steps per optimiser step), gradient clipping, the schedule (stepped once per
  optimiser step, so 1 and N processes follow the same schedule), an EMA of the trainable weights;
- checkpoints every save_every steps (checkpoint.py) and exact resume: weights, optimiser, schedule, RNG, EMA,
  and metrics.jsonl cut back to the checkpoint's step, so a run killed at any point and resumed writes exactly the
  uninterrupted run's steps; a checkpoint written for other data, batch settings or seed is refused;
- metrics.jsonl (log.MetricsLog, rank 0) and a progress bar with the live loss and learning rate;
- evaluation every eval_every steps and at the end, and the export, both with the averaged (EMA) weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the outputs that show a folder holds a run (refused without --resume or --overwrite)
RUN_MARKERS = ("metrics.jsonl", "checkpoints", "final", "final_reference", "merged")
#: what a run writes into its output folder, deleted by --overwrite (the latent cache, also there by default, is kept)
RUN_OUTPUTS = (*RUN_MARKERS, "samples", "eval.json", "eval.png", "resolved_recipe.yaml")
#: test hook: SIGKILL the process right after this optimiser step is logged (tests of exact resume)
KILL_AFTER_STEP = "VIDEOALIGN_KILL_AFTER_STEP"


@dataclass
class TrainingConfig:
    """The settings every training command shares; each command's config adds its own."""

    #: where metrics.jsonl, checkpoints/ and final/ go
    output_dir: str = "runs/train"
    #: items (pairs or videos) per process per micro-step
    batch_size: int = 1
    #: micro-steps per optimiser step
    grad_accum: int = 1
    #: passes over the data (ignored when max_steps is set)
    epochs: int = 1
    #: stop after this many optimiser steps
    max_steps: int | None = None
    #: clip the global gradient norm (null = no clipping)
    max_grad_norm: float | None = 1.0
    #: recompute activations in backward to save memory (same numbers)
    gradient_checkpointing: bool = False
    #: keep an exponential moving average of the trainable weights, used for evaluation and the export (null = none)
    ema_decay: float | None = None
    #: write a resumable checkpoint every N steps (0 = never)
    save_every: int = 0
    #: write a metrics.jsonl line every N steps
    log_every: int = 1
    #: seed of the data order, the noise and the initialisation
    seed: int = 42
    #: threads that read data ahead of the model
    num_workers: int = 2
    #: auto, cpu, cuda or cuda:N (under accelerate launch each process uses its own)
    device: str = "auto"
    #: continue from the newest checkpoint in output_dir
    resume: bool = False
    #: delete the run already in output_dir (metrics, checkpoints, final/, samples; not the latent cache) and start over
    overwrite: bool = False

    def __post_init__(self):
        for name in ("batch_size", "grad_accum", "epochs", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.save_every < 0:
            raise ValueError(f"save_every must be >= 0 (0 = never), got {self.save_every}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or null (no clipping), got {self.max_grad_norm}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: --resume continues the run in output_dir, "
                             "--overwrite deletes it")


def check_output_dir(cfg: TrainingConfig, accelerator) -> None:
    """Refuse an output folder that holds another run (or is not a folder) unless resume / overwrite; with overwrite,
    rank 0 deletes the old run's outputs. Call it on every rank before loading any model."""
    main = accelerator.is_main_process
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file; pass a folder for the run's outputs")
    held = [name for name in RUN_MARKERS if (out / name).exists()]
    if held and not cfg.resume and not cfg.overwrite:
        raise ValueError(f"output_dir {out} already holds a run ({', '.join(held)}); pass --resume to continue it, "
                         "--overwrite to replace it, or another --output-dir")
    if main:
        if cfg.overwrite:
            for name in RUN_OUTPUTS:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()


def plan(cfg: TrainingConfig, n: int, world: int, source: str) -> tuple[int, int]:
    """(global batch, total optimiser steps) of a run over n items on `world` processes; a ValueError naming
    `source` when n is less than one global batch."""
    global_batch = cfg.batch_size * cfg.grad_accum * world
    if n < global_batch:
        raise ValueError(f"{source}: {n} usable items, fewer than one global batch ({cfg.batch_size} x "
                         f"{cfg.grad_accum} x {world} processes)")
    return global_batch, cfg.max_steps or cfg.epochs * (n // global_batch)


def report_data(cfg: TrainingConfig, name: str, items: list, problems: list[str], world: int, main: bool,
                source: str, extra: str = "", note: str = "") -> int:
    """Print the skipped items (rank 0), refuse data smaller than one global batch (plan), and print what the run
    will do: "<n> <name> (<k> skipped<extra>), <steps> steps of <global batch> on <world> process(es)<note>".
    Returns the total steps."""
    from videoalign.log import console

    if main:
        for problem in problems:
            console.print(f"[yellow]skipped:[/] {problem}", highlight=False)
    global_batch, steps = plan(cfg, len(items), world, source)
    if main:
        console.print(f"{len(items)} {name} ({len(problems)} skipped{extra}), {steps} steps of {global_batch} on "
                      f"{world} process(es){note}", highlight=False)
    return steps


def step_indices(step: int, n: int, global_batch: int, seed: int) -> list[int]:
    """The global batch of optimiser step `step` (0-based) over n items: epoch e visits randperm(n, seed + e) in
    batches of global_batch, its last partial batch dropped."""
    import torch

    per_epoch = n // global_batch
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return order[offset * global_batch:(offset + 1) * global_batch]


class Ema:
    """Exponential moving average of the trainable parameters, in float32."""

    def __init__(self, params: dict, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in params.items()}

    def update(self, params: dict) -> None:
        import torch

        with torch.no_grad():
            for n, p in params.items():
                self.shadow[n].lerp_(p.detach().float(), 1 - self.decay)

    def swap(self, params: dict) -> None:
        """Exchange live and averaged weights (call twice to restore)."""
        import torch

        with torch.no_grad():
            for n, p in params.items():
                live = p.detach().float().clone()
                p.copy_(self.shadow[n].to(p.dtype))
                self.shadow[n] = live


def trainable_params(module) -> dict:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def item_key(item) -> str:
    """What identifies a training item for the resume guard: its prompt, video file names (not folders: moving the
    data keeps a run resumable), labels and rewards."""
    fields = [item.prompt] + [Path(getattr(item, k)).name for k in ("path_a", "path_b", "path") if hasattr(item, k)]
    fields += [repr(getattr(item, k)) for k in ("labels", "scores_a", "scores_b", "weights", "reward")
               if hasattr(item, k)]
    return "\t".join(fields)


@dataclass
class Objective:
    """What a command hands the trainer.

    loss(batch, step, positions, step_items) -> (scalar loss, {stat: tensor}): `batch` is this rank's items of one
    micro-step (or what `prepare` made of them), `positions` their places in the step's global batch (seeds of
    per-item noise), `step_items` the whole global batch (for batch-normalised weights). A loss that ran its own
    backward passes returns a loss without grad. Stats are gathered over ranks and micro-steps and averaged, unless
    `summarize` turns the gathered tensors into the logged figures. `prepare(batch)` runs in num_workers threads
    ahead of the model (decoding)."""

    name: str
    items: list
    loss: Callable
    prepare: Callable | None = None
    summarize: Callable[[dict], dict] | None = None


@dataclass
class Trainer:
    """The loop over one command's parts. `model` is what accelerate prepared (DDP/FSDP-wrapped), `module` the
    plain module whose trainable parameters are checkpointed; `evaluate(step, final)` runs every `eval_every` steps
    and at the end with the averaged weights, on every rank (it decides where to work), and returns figures for
    metrics.jsonl or None; `finish()` exports, also with the averaged weights, on every rank."""

    cfg: TrainingConfig
    accelerator: Any
    objective: Objective
    model: Any
    module: Any
    optimizer: Any
    scheduler: Any
    evaluate: Callable[[int, bool], dict | None] | None = None
    eval_every: int = 0
    finish: Callable[[], None] | None = None
    sharded: bool = False

    def __post_init__(self):
        acc = self.accelerator
        self.rank, self.world, self.main = acc.process_index, acc.num_processes, acc.is_main_process
        self.out = Path(self.cfg.output_dir)
        n = len(self.objective.items)
        self.global_batch, self.total_steps = plan(self.cfg, n, self.world, self.objective.name)
        self.params = trainable_params(self.module)
        self.ema = Ema(self.params, self.cfg.ema_decay) if self.cfg.ema_decay else None
        digest = hashlib.sha1("\n".join(map(item_key, self.objective.items)).encode()).hexdigest()
        #: what the run is for, in every checkpoint's state.json; a resume with other values is refused
        self.state = {"objective": self.objective.name, "items": n, "global_batch": self.global_batch,
                      "seed": self.cfg.seed, "data_sha1": digest}

    # -- resume -------------------------------------------------------------------------------------------------
    def _resume(self) -> int:
        from videoalign import checkpoint
        from videoalign.distributed import shard_like
        from videoalign.log import console

        last = checkpoint.latest(self.out) if self.cfg.resume else None
        if last is None:
            if self.cfg.resume and self.main:
                console.print(f"no checkpoint in {self.out}; starting from step 0", highlight=False)
            return 0
        saved = checkpoint.read_state(last)
        changed = [k for k in ("items", "global_batch", "seed", "data_sha1", "objective")
                   if k in saved and saved[k] != self.state[k]]
        if changed:
            diffs = ", ".join(f"{k} {saved[k]} -> {self.state[k]}" for k in changed)
            raise ValueError(f"{last} was written for other data or batch settings ({diffs}); resume with the same "
                             "data, batch_size, grad_accum, process count and seed, or pass --overwrite")
        state = checkpoint.load(last, self.module, self.optimizer.optimizer, self.scheduler, self.rank,
                                shard_like if self.sharded else None)
        if self.ema is not None and state.get("tensors"):
            self.ema.shadow = {n: shard_like(t.float(), self.params[n]) for n, t in state["tensors"].items()}
        if self.main:
            console.print(f"resumed from {last} at step {state['step']}", highlight=False)
        return state["step"]

    # -- one optimiser step -------------------------------------------------------------------------------------
    def _jobs(self, start: int):
        """(step, positions, items) of every micro-step from `start` on, in order."""
        items, cfg = self.objective.items, self.cfg
        positions = list(range(self.rank, self.global_batch, self.world))
        for step in range(start, self.total_steps):
            step_items = [items[i] for i in step_indices(step, len(items), self.global_batch, cfg.seed)]
            for m in range(cfg.grad_accum):
                mine = positions[m * cfg.batch_size:(m + 1) * cfg.batch_size]
                yield step, mine, [step_items[j] for j in mine], step_items

    def _micro_step(self, job, prepared) -> tuple[Any, dict]:
        acc, cfg = self.accelerator, self.cfg
        step, positions, batch, step_items = job
        with acc.accumulate(self.model):
            with acc.autocast():
                loss, stats = self.objective.loss(prepared, step, positions, step_items)
            if loss.requires_grad:  # else the objective ran its own backward passes (dpo backward: split)
                acc.backward(loss)
            if acc.sync_gradients and cfg.max_grad_norm:
                acc.clip_grad_norm_(list(self.params.values()), cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        return loss, stats

    def _record(self, step: int, collected: dict) -> dict:
        import torch

        gathered = {k: self.accelerator.gather(torch.cat(v).to(self.accelerator.device)).float()
                    for k, v in collected.items()}
        record = {"step": step, "lr": self.scheduler.get_last_lr()[0], "loss": gathered.pop("loss").mean().item()}
        if self.objective.summarize is not None:
            record.update(self.objective.summarize(gathered))
        else:
            record.update({k: v.mean().item() for k, v in gathered.items()})
        return record

    # -- the loop -----------------------------------------------------------------------------------------------
    def fit(self) -> None:
        from videoalign import checkpoint
        from videoalign.data import prefetch
        from videoalign.distributed import full_optimizer_state, full_tensors
        from videoalign.log import MetricsLog, progress

        acc, cfg = self.accelerator, self.cfg
        start = self._resume()
        log = MetricsLog(self.out / "metrics.jsonl", start, enabled=self.main)
        prepare = self.objective.prepare or (lambda batch: batch)
        workers = cfg.num_workers if self.objective.prepare else 0
        jobs = prefetch(lambda job: prepare(job[2]), self._jobs(start), workers, ahead=2 * cfg.grad_accum)
        collected: dict[str, list] = {}
        with progress(self.total_steps - start, f"{self.objective.name} training", enabled=self.main) as bar:
            for job, prepared in jobs:
                if isinstance(prepared, Exception):
                    raise ValueError(f"step {job[0] + 1}: cannot read a training item ({prepared}); fix or drop it")
                loss, stats = self._micro_step(job, prepared)
                collected.setdefault("loss", []).append(loss.detach().float().reshape(1))
                for k, v in stats.items():
                    collected.setdefault(k, []).append(v.detach().float().reshape(-1))
                if len(collected["loss"]) < cfg.grad_accum:
                    continue
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.params)
                done = job[0] + 1
                record, collected, figures = self._record(done, collected), {}, None
                if self.evaluate is not None and self.eval_every and done % self.eval_every == 0:
                    figures = self._evaluate(done, final=False)
                    record.update(figures or {})
                bar.advance(1, loss=record["loss"], lr=record["lr"])
                if done % cfg.log_every == 0 or figures:
                    log.write(record)
                if cfg.save_every and done % cfg.save_every == 0:  # whole tensors: gathered by every rank (FSDP)
                    checkpoint.save(self.out, done, full_tensors(self.params, self.main),
                                    full_optimizer_state(self.optimizer.optimizer, self.main), self.scheduler,
                                    self.state, self.rank, self.world, acc.wait_for_everyone,
                                    full_tensors(self.ema.shadow, self.main) if self.ema else None)
                acc.wait_for_everyone()
                if os.environ.get(KILL_AFTER_STEP) == str(done):
                    os.kill(os.getpid(), signal.SIGKILL)
        # the end: evaluation and export with the averaged weights
        final = self._evaluate(self.total_steps, final=True) if self.evaluate is not None else None
        if final:
            log.write({"step": self.total_steps, "final": True, **final})
        if self.finish is not None:
            with self.averaged():
                self.finish()
        acc.wait_for_everyone()

    def _evaluate(self, step: int, final: bool) -> dict | None:
        with self.averaged():
            result = self.evaluate(step, final)
        self.accelerator.wait_for_everyone()
        return result

    @contextlib.contextmanager
    def averaged(self):
        """A context in which the trainable parameters hold the EMA weights (when there is an EMA)."""
        if self.ema is not None:
            self.ema.swap(self.params)
        try:
            yield
        finally:
            if self.ema is not None:
                self.ema.swap(self.params)
