"""`videoalign train-latent-rm`: the noisy-latent reward model r_phi of Flow-NRG (REFERENCE.md 10.7).

r_phi (latent_reward.py) is built from the generator's own patch embedding, condition embedder and first k
transformer blocks, and trained on pairs with one label per dimension (1 A, -1 B, 0 tie, 22 masked) with the
Bradley-Terry-with-ties loss (7.2-7.3). Both videos of a pair get the same t and the same noise:

    x_t^A = (1 - t) x0^A + t noise,   x_t^B = (1 - t) x0^B + t noise
    loss  = reduce(btt(r_phi(x_t^A, t, c), r_phi(x_t^B, t, c), labels, theta))

with A and B in one concatenated forward. t is uniform on [0, 1] by default (shift 1.0), so every noise level
guidance visits is trained. The data order, the (t, noise) draws, the latent cache, checkpoints and resume are
align.py's: step s takes the global batch `step_indices(s)`, rank r every world-th item of it, and item j of
step s draws its (t, noise) from hash(seed, s, j); so one process with batch 2 equals two with batch 1.

Evaluation (rank 0, every `eval_every` steps and at the end): pairwise accuracy per dimension, with and without
ties (metrics.py), in `noise_bins` equal-width bins of t, on `val_data` (default: the training pairs). Each
(pair, bin) has a fixed t inside the bin and a fixed noise, so evaluations are comparable across steps and
runs. Outputs: eval.json, eval.png (accuracy against t at the latest evaluation), metrics.jsonl, checkpoints/,
and final/ (save_latent_reward: what `videoalign guide` loads).

1 GPU:  videoalign train-latent-rm --recipe recipes/train_latent_rm/wan2_1_t2v_1_3b.yaml --data pairs.jsonl
N GPUs: accelerate launch --num_processes N -m videoalign train-latent-rm --recipe recipes/train_latent_rm/wan2_1_t2v_1_3b.yaml --data pairs.jsonl
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from videoalign.gen.align import ClipDataConfig
from videoalign.gen.latent_reward import LatentRewardConfig


@dataclass
class TrainLatentRmConfig(ClipDataConfig):
    """data: pairs with per-dimension labels (relabel's pairs JSONL, A = chosen, or a reference pair CSV, A/B/same);
    the latent cache is shared with dpo/rwr runs of the same clip spec."""

    #: where metrics.jsonl, eval.json, eval.png, checkpoints/ and final/ go
    output_dir: str = "runs/latent_rm"
    #: the reward model: k blocks, dims, freeze_backbone, pooling, head_hidden
    reward: LatentRewardConfig = field(default_factory=LatentRewardConfig)
    #: AdamW learning rate (paper Table 11: Adam, 5e-6)
    learning_rate: float = 5e-6
    weight_decay: float = 0.0
    #: clip the global gradient norm (null = no clipping)
    max_grad_norm: float | None = 1.0
    #: pairs per process per micro-step
    batch_size: int = 1
    #: micro-steps per optimiser step
    grad_accum: int = 1
    #: passes over the data (paper: 2; ignored when max_steps is set)
    epochs: int = 2
    max_steps: int | None = None
    #: training timesteps: uniform (default, every noise level) or logit_normal (concentrated mid-way)
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    #: flow shift s applied to the drawn t (1.0 = none: t uniform on [0, 1]; null = the model family's, 3.0 for
    #: Wan 480p, which matches the distribution of t along a shifted sampling schedule)
    shift: float | None = 1.0
    #: BTT tie parameter theta > 1 (the released VideoReward: 5)
    theta: float = 5.0
    #: compat = mean over all B x D entries, masked ones included (the reference); masked_mean = over valid ones
    reduction: Literal["compat", "masked_mean"] = "compat"
    #: recompute the k blocks' activations in backward to save memory
    gradient_checkpointing: bool = False
    #: write a resumable checkpoint every N steps (0 = never)
    save_every: int = 0
    log_every: int = 1
    #: evaluate accuracy per noise bin every N steps (0 = only at the end)
    eval_every: int = 0
    #: evaluation pairs, same formats as data (default: the training pairs)
    val_data: str | None = None
    #: equal-width bins of t in [0, 1] for the evaluation
    noise_bins: int = 5
    #: pairs per evaluation forward
    eval_batch_size: int = 8
    seed: int = 42
    num_workers: int = 2
    device: str = "auto"
    #: continue from the newest checkpoint in output_dir
    resume: bool = False

    def __post_init__(self):
        from videoalign.gen.align import check_training_fields

        check_training_fields(self, ("batch_size", "grad_accum", "epochs", "log_every", "noise_bins",
                                     "eval_batch_size"))
        for name in ("save_every", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = never), got {getattr(self, name)}")
        if not self.theta > 1:
            raise ValueError(f"theta must be > 1 (the BTT tie term has ln(theta^2 - 1)), got {self.theta}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.shift is not None and self.shift <= 0:
            raise ValueError(f"shift must be > 0 (1.0 = no shift) or null, got {self.shift}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or null (no clipping), got {self.max_grad_norm}")


def pair_rewards(model, gen, cache, pairs, t: torch.Tensor, noise: torch.Tensor, device):
    """(r_A, r_B), each (B, D) float32, for pairs noised with the shared (t (B,), noise (B, C, F', H', W')):
    one forward on the concatenated [A; B] batch."""
    from videoalign.flow import add_noise

    x0 = torch.stack([cache.load_video(p.path_a) for p in pairs] + [cache.load_video(p.path_b) for p in pairs])
    text = gen.pad_text([cache.load_prompt(p.prompt) for p in pairs])  # (B, L, D_text)
    t2, noise2 = torch.cat([t, t]).to(device), torch.cat([noise, noise]).to(device)
    x_t = add_noise(x0.to(device), noise2, t2)  # (2B, C, F', H', W'): A rows then B rows
    rewards = model(x_t, t2, torch.cat([text, text]).to(device))  # (2B, D)
    b = len(pairs)
    return rewards[:b], rewards[b:]


def latent_rm_loss(cfg: TrainLatentRmConfig, model, gen, cache, pairs, t, noise, device):
    """Scalar BTT loss of a micro-batch and per-entry stats: correct (B, D) and nontied (B, D) as floats."""
    from videoalign.losses import btt_loss, reduce_loss

    r_a, r_b = pair_rewards(model, gen, cache, pairs, t, noise, device)
    labels = torch.tensor([p.labels for p in pairs], dtype=torch.long, device=r_a.device)  # (B, D)
    loss, mask = btt_loss(r_a, r_b, labels, cfg.theta)
    nontied = (labels == 1) | (labels == -1)
    correct = nontied & ((r_a - r_b).detach() * labels > 0)
    return reduce_loss(loss, mask, cfg.reduction), {"correct": correct.float(), "nontied": nontied.float()}


def bin_labels(bins: int) -> list[str]:
    """"lo-hi" names of `bins` equal-width bins of [0, 1]: 5 -> 0.0-0.2, 0.2-0.4, ..., 0.8-1.0."""
    def fmt(x: float) -> str:
        text = f"{x:.3f}".rstrip("0")
        return text + "0" if text.endswith(".") else text

    return [f"{fmt(i / bins)}-{fmt((i + 1) / bins)}" for i in range(bins)]


@torch.no_grad()
def evaluate(cfg: TrainLatentRmConfig, model, gen, cache, pairs, shape, device) -> dict:
    """{dim: {bin: {acc_without_ties, acc_with_ties, pairs}}}: pairwise accuracy of r_A - r_B against the labels
    (masked labels left out; NaN accuracies as None). Pair j in bin b is noised with t uniform in the bin and
    noise from a generator seeded by (seed, b, j), fixed across evaluations."""
    from videoalign.gen.align import step_seed
    from videoalign.losses import INVALID
    from videoalign.metrics import accuracy_with_ties, accuracy_without_ties

    was_training = model.training
    model.eval()
    dims = list(cfg.reward.dims)
    labels = torch.tensor([p.labels for p in pairs], dtype=torch.long)  # (N, D)
    out: dict[str, dict] = {d: {} for d in dims}
    for b, name in enumerate(bin_labels(cfg.noise_bins)):
        lo, width = b / cfg.noise_bins, 1 / cfg.noise_bins
        margins = []
        for start in range(0, len(pairs), cfg.eval_batch_size):
            chunk = pairs[start:start + cfg.eval_batch_size]
            ts, noises = [], []
            for j in range(start, start + len(chunk)):
                g = torch.Generator().manual_seed(step_seed(cfg.seed + 1, 1_000_000 + b, j))
                ts.append(lo + width * torch.rand(1, generator=g))
                noises.append(torch.randn(shape, generator=g))
            r_a, r_b = pair_rewards(model, gen, cache, chunk, torch.cat(ts), torch.stack(noises), device)
            margins.append((r_a - r_b).float().cpu())
        margin = torch.cat(margins)  # (N, D)
        for d, dim in enumerate(dims):
            valid = labels[:, d] != INVALID
            h, m = labels[valid, d].double().tolist(), margin[valid, d].double().tolist()
            without, with_ties = accuracy_without_ties(h, m), accuracy_with_ties(h, m).accuracy
            out[dim][name] = {"acc_without_ties": None if math.isnan(without) else round(without, 6),
                              "acc_with_ties": None if math.isnan(with_ties) else round(with_ties, 6),
                              "pairs": len(h)}
    model.train(was_training)
    return out


def _write_eval(out: Path, cfg: TrainLatentRmConfig, step: int, result: dict, pairs: int) -> None:
    """Add step's result to eval.json (kept across resumes) and redraw eval.png for it."""
    from videoalign.data import write_atomic
    from videoalign.plots import accuracy_by_noise

    path = out / "eval.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update({"data": cfg.val_data or cfg.data, "dims": list(cfg.reward.dims),
                   "noise_bins": bin_labels(cfg.noise_bins), "pairs": pairs})
    record.setdefault("steps", {})[str(step)] = result
    record["steps"] = dict(sorted(record["steps"].items(), key=lambda kv: int(kv[0])))
    write_atomic(path, json.dumps(record, indent=2) + "\n")
    accuracy_by_noise(result, out / "eval.png", f"latent reward accuracy by noise level, step {step} ({pairs} pairs)")


def run(cfg: TrainLatentRmConfig) -> int:
    """Cache, build, train, evaluate, checkpoint, save final/. Exit code 0."""
    import yaml
    from transformers import get_constant_schedule

    from videoalign import checkpoint
    from videoalign.align_data import read_labelled_latent_pairs
    from videoalign.gen.align import (
        draw_noise,
        drop_unencoded,
        prepare_cache,
        trainable_params,
        write_metrics,
    )
    from videoalign.commands.train_reward import step_indices
    from videoalign.config import config_to_dict
    from videoalign.data import write_atomic
    from videoalign.distributed import is_sharded, make_accelerator
    from videoalign.gen.generator import load_generator
    from videoalign.gen.latent_reward import build_latent_reward, save_latent_reward
    from videoalign.log import console, progress

    dims = list(cfg.reward.dims)
    items, problems = read_labelled_latent_pairs(cfg.data, cfg.videos_root, dims)
    val_items, val_problems = (read_labelled_latent_pairs(cfg.val_data, cfg.videos_root, dims) if cfg.val_data
                               else (None, []))
    accelerator = make_accelerator(cfg.device, gradient_accumulation_steps=cfg.grad_accum)
    if is_sharded(accelerator):  # its checkpoints and evaluation read whole parameters on rank 0
        raise ValueError("train-latent-rm does not support FSDP; the latent reward model is a few blocks, launch it "
                         "with DDP (recipes/accelerate/multi_gpu.yaml)")
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    out = Path(cfg.output_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "resolved_recipe.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    # 1. Generator and latent cache (training and validation pairs); pairs that could not be encoded are skipped.
    gen = load_generator(cfg.model, cfg.dtype, device)
    everything = items + (val_items or [])
    cache, errors = prepare_cache(cfg, gen, [v for p in everything for v in (p.path_a, p.path_b)],
                                  [p.prompt for p in everything], accelerator, console)
    items = drop_unencoded(cfg.data, items, lambda p: (p.path_a, p.path_b), cache, errors, problems)
    if val_items is not None:
        val_items = drop_unencoded(cfg.val_data, val_items, lambda p: (p.path_a, p.path_b), cache, errors,
                                   val_problems)
    global_batch = cfg.batch_size * cfg.grad_accum * world
    if main:
        for problem in problems + val_problems:
            console.print(f"[yellow]skipped:[/] {problem}", highlight=False)
    if len(items) < global_batch:
        raise ValueError(f"{cfg.data}: {len(items)} usable pairs ({len(problems)} skipped), fewer than one global "
                         f"batch ({cfg.batch_size} x {cfg.grad_accum} x {world} processes)")
    if val_items is not None and not val_items:
        raise ValueError(f"{cfg.val_data}: no usable pairs ({len(val_problems)} skipped)")
    total_steps = cfg.max_steps or cfg.epochs * (len(items) // global_batch)
    if main:
        console.print(f"{len(items)} pairs ({len(problems)} skipped), {total_steps} steps of {global_batch} on "
                      f"{world} process(es)", highlight=False)

    # 2. The reward model from the generator's transformer (deep copies); the generator's own transformer and
    # text encoder then leave the accelerator (the cache holds what they would compute).
    rm = build_latent_reward(gen.transformer, cfg.reward, head_seed=cfg.seed)
    gen.transformer.to("cpu")
    gen.text_encoder.to("cpu")
    for p in rm.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # float32 masters
    rm.gradient_checkpointing = cfg.gradient_checkpointing
    rm.train()
    params = trainable_params(rm)
    optimizer = torch.optim.AdamW(list(params.values()), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_constant_schedule(optimizer)
    model, optimizer = accelerator.prepare(rm, optimizer)

    start_step = 0
    if cfg.resume and (last := checkpoint.latest(out)) is not None:
        state = checkpoint.load(last, rm, optimizer.optimizer, scheduler, rank)
        start_step = state["step"]
        if state.get("items", len(items)) != len(items) or state.get("global_batch", global_batch) != global_batch:
            raise ValueError(f"{last}: written for {state.get('items')} pairs in global batches of "
                             f"{state.get('global_batch')}, but this run has {len(items)} and {global_batch}; resume "
                             "with the same data and batch settings, or use a new output_dir")
        if main:
            console.print(f"resumed from {last} at step {start_step}", highlight=False)

    # 3. Loop: step s = grad_accum micro-steps of batch_size pairs on every rank.
    shape = gen.family.latent_shape(cfg.num_frames, cfg.height, cfg.width)
    eval_pairs = val_items if val_items is not None else items
    metrics_path = out / "metrics.jsonl"
    evaluated: set[int] = set()
    with progress(total_steps - start_step, "latent RM training", enabled=main) as bar:
        for step in range(start_step, total_steps):
            order = step_indices(step, len(items), global_batch, cfg.seed)
            positions = list(range(rank, global_batch, world))
            losses, correct, nontied = [], [], []
            for m in range(cfg.grad_accum):
                mine = positions[m * cfg.batch_size:(m + 1) * cfg.batch_size]
                batch = [items[order[j]] for j in mine]
                t, noise = draw_noise(cfg, gen.family, step, mine, shape)
                with accelerator.accumulate(model):
                    loss, stats = latent_rm_loss(cfg, model, gen, cache, batch, t, noise, device)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                losses.append(loss.detach().reshape(1))
                correct.append(stats["correct"])
                nontied.append(stats["nontied"])
            scheduler.step()
            done = step + 1
            gathered = [accelerator.gather(torch.cat(x).to(device)).float() for x in (losses, correct, nontied)]
            record = {"step": done, "lr": scheduler.get_last_lr()[0], "loss": gathered[0].mean().item()}
            if gathered[2].sum() > 0:  # sign accuracy of r_A - r_B on the step's non-tied labels
                record["train_acc"] = (gathered[1].sum() / gathered[2].sum()).item()
            bar.advance(1)
            if main and done % cfg.log_every == 0:
                write_metrics(metrics_path, record)
            if cfg.save_every and done % cfg.save_every == 0:
                extra = {"items": len(items), "global_batch": global_batch}
                checkpoint.save(out, done, params, optimizer.optimizer, scheduler, extra, rank, world,
                                accelerator.wait_for_everyone)
            if main and cfg.eval_every and done % cfg.eval_every == 0:
                _write_eval(out, cfg, done, evaluate(cfg, rm, gen, cache, eval_pairs, shape, device), len(eval_pairs))
                evaluated.add(done)
            accelerator.wait_for_everyone()

    # 4. Final evaluation and the saved model (rank 0).
    if main:
        if total_steps not in evaluated:
            _write_eval(out, cfg, total_steps, evaluate(cfg, rm, gen, cache, eval_pairs, shape, device),
                        len(eval_pairs))
        save_latent_reward(rm, cfg.reward, out / "final", clip={"num_frames": cfg.num_frames, "height": cfg.height,
                                                                 "width": cfg.width, "fps": cfg.fps})
        console.print(f"saved latent reward model {out / 'final'} (load with load_latent_reward); accuracy by "
                      f"noise level in {out / 'eval.json'}", highlight=False)
    accelerator.wait_for_everyone()
    return 0
