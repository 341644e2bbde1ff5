"""`videoalign train-latent-rm`: the noisy-latent reward model r_phi of Flow-NRG (docs/numerics.md, Flow-NRG).

r_phi (gen/latent_reward.py) is built from the generator's own patch embedding, condition embedder and first k
transformer blocks, and trained on pairs with one label per dimension (1 A, -1 B, 0 tie, INVALID masked) with the
Bradley-Terry-with-ties loss. Both videos of a pair get the same t and the same noise:

    x_t^A = (1 - t) x0^A + t noise,   x_t^B = (1 - t) x0^B + t noise
    loss  = reduce(btt(r_phi(x_t^A, t, c), r_phi(x_t^B, t, c), labels, theta))

with A and B in one concatenated forward. t is drawn uniformly from the 1000-entry sigma table by default (shift
1.0), so every noise level guidance visits is trained. Data order, (t, noise) draws, checkpoints and resume are the
trainer's and gen/training.py's, as for dpo and rwr.

Evaluation (rank 0, every `eval_every` steps and at the end): pairwise accuracy per dimension, with and without
ties, in `noise_bins` equal-width bins of t, on `val_data` (default: the training pairs). Each (pair, bin) has a
fixed t inside the bin and a fixed noise, so evaluations are comparable across steps and runs. Outputs: eval.json,
eval.png (accuracy against t at the latest evaluation), metrics.jsonl, checkpoints/, and final/ (what `videoalign
guide` loads).

1 GPU:  videoalign train-latent-rm --recipe recipes/train_latent_rm/wan2_1_t2v_1_3b.yaml --data pairs.jsonl
N GPUs: accelerate launch --num_processes N -m videoalign train-latent-rm --recipe recipes/train_latent_rm/wan2_1_t2v_1_3b.yaml --data pairs.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from videoalign.gen.settings import LatentRewardConfig, LatentTrainingConfig


@dataclass
class TrainLatentRmConfig(LatentTrainingConfig):
    """data: pairs with per-dimension labels (relabel's pairs JSONL, A = chosen, or a reference pair CSV, A/B/same);
    the latent cache is shared with dpo/rwr runs of the same clip spec."""

    #: where metrics.jsonl, eval.json, eval.png, checkpoints/ and final/ go
    output_dir: str = "runs/latent_rm"
    #: the reward model: k blocks, dims, freeze_backbone, pooling, head_hidden
    reward: LatentRewardConfig = field(default_factory=LatentRewardConfig)
    epochs: int = 2
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"
    shift: float | None = 1.0
    #: BTT tie parameter theta > 1 (the released VideoReward: 5)
    theta: float = 5.0
    #: compat = mean over all B x D entries, masked ones included (the reference); masked_mean = over valid ones
    reduction: Literal["compat", "masked_mean"] = "compat"
    #: evaluate accuracy per noise bin every N steps (0 = only at the end)
    eval_every: int = 0
    #: evaluation pairs, same formats as data (default: the training pairs)
    val_data: str | None = None
    #: equal-width bins of t in [0, 1] for the evaluation
    noise_bins: int = 5
    #: pairs per evaluation forward
    eval_batch_size: int = 8

    def __post_init__(self):
        super().__post_init__()
        for name in ("noise_bins", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0 = only at the end), got {self.eval_every}")
        if not self.theta > 1:
            raise ValueError(f"theta must be > 1 (the BTT tie term has ln(theta^2 - 1)), got {self.theta}")


def _write_eval(out: Path, cfg: TrainLatentRmConfig, step: int, result: dict, pairs: int) -> None:
    """Add step's result to eval.json (kept across resumes) and redraw eval.png for it."""
    import json

    from videoalign.data import write_json
    from videoalign.gen.objectives import bin_labels
    from videoalign.plots import accuracy_by_noise

    path = out / "eval.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update({"data": cfg.val_data or cfg.data, "dims": list(cfg.reward.dims),
                   "noise_bins": bin_labels(cfg.noise_bins), "pairs": pairs})
    steps = {k: v for k, v in record.get("steps", {}).items() if int(k) < step}  # a resumed run redoes later ones
    record["steps"] = dict(sorted({**steps, str(step): result}.items(), key=lambda kv: int(kv[0])))
    write_json(path, record)
    accuracy_by_noise(result, out / "eval.png", f"latent reward accuracy by noise level, step {step} ({pairs} pairs)")


def _build(cfg: TrainLatentRmConfig, gen, accelerator):
    """(reward model, its prepared module, optimiser, schedule): deep copies of the generator's first k blocks with
    float32 masters, AdamW at a constant rate."""
    import torch
    from transformers import get_constant_schedule

    from videoalign.gen.latent_reward import build_latent_reward
    from videoalign.trainer import trainable_params

    rm = build_latent_reward(gen.transformer, cfg.reward, head_seed=cfg.seed)
    gen.transformer.to("cpu")
    gen.text_encoder.to("cpu")
    for p in rm.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # float32 masters
    rm.gradient_checkpointing = cfg.gradient_checkpointing
    rm.train()
    optimizer = torch.optim.AdamW(list(trainable_params(rm).values()), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    scheduler = get_constant_schedule(optimizer)
    model, optimizer = accelerator.prepare(rm, optimizer)
    return rm, model, optimizer, scheduler


def run(cfg: TrainLatentRmConfig) -> int:
    """Cache, build, train, evaluate, checkpoint, save final/. Exit code 0."""
    from videoalign.config import write_resolved
    from videoalign.distributed import is_sharded, make_accelerator
    from videoalign.gen.generator import load_generator
    from videoalign.gen.latent_reward import save_latent_reward
    from videoalign.gen.objectives import latent_rm_accuracy, latent_rm_step, train_accuracy
    from videoalign.gen.training import draw_noise, drop_unencoded, prepare_cache
    from videoalign.labels import read_pairs
    from videoalign.log import console
    from videoalign.trainer import Objective, Trainer, check_output_dir, report_data

    accelerator = make_accelerator(cfg.device, gradient_accumulation_steps=cfg.grad_accum)
    if is_sharded(accelerator):  # its checkpoints and evaluation read whole parameters on rank 0
        raise ValueError("train-latent-rm does not support FSDP; the latent reward model is a few blocks, launch it "
                         "with DDP (recipes/accelerate/multi_gpu.yaml)")
    check_output_dir(cfg, accelerator)
    dims = list(cfg.reward.dims)
    found = read_pairs(cfg.data, cfg.videos_root, dims)
    items, problems = found.pairs, found.problems
    val = read_pairs(cfg.val_data, cfg.videos_root, dims) if cfg.val_data else None
    val_items, val_problems = (val.pairs, val.problems) if val else (None, [])
    main, device, out = accelerator.is_main_process, accelerator.device, Path(cfg.output_dir)
    write_resolved(cfg, out / "resolved_recipe.yaml", main)

    # 1. Generator and latent cache (training and validation pairs); pairs that could not be encoded are skipped.
    gen = load_generator(cfg.model, cfg.dtype, device)
    everything = items + (val_items or [])
    cache, errors = prepare_cache(cfg, gen, [v for p in everything for v in (p.path_a, p.path_b)],
                                  [p.prompt for p in everything], accelerator)
    items = drop_unencoded(cfg.data, items, lambda p: (p.path_a, p.path_b), cache, errors, problems)
    if val_items is not None:
        val_items = drop_unencoded(cfg.val_data, val_items, lambda p: (p.path_a, p.path_b), cache, errors,
                                   val_problems)
    report_data(cfg, "pair items", items, problems + val_problems, accelerator.num_processes, main, cfg.data,
                found.note())
    if val_items is not None and not val_items:
        raise ValueError(f"{cfg.val_data}: no usable pairs ({len(val_problems)} skipped)")

    # 2. The reward model from the generator's transformer; the generator's own transformer and text encoder then
    # leave the accelerator (the cache holds what they would compute).
    rm, model, optimizer, scheduler = _build(cfg, gen, accelerator)

    # 3. The objective, the evaluation by noise level and the export, for the trainer.
    shape = gen.family.latent_shape(cfg.num_frames, cfg.height, cfg.width)
    eval_pairs = val_items if val_items is not None else items
    evaluated: set[int] = set()

    def loss(batch, step, positions, _step_items):
        t, noise = draw_noise(cfg, step, positions, shape)
        return latent_rm_step(model, gen, cache, batch, dims, t, noise, device, cfg.theta, cfg.reduction)

    def evaluate(step: int, final: bool):
        if main and step not in evaluated:
            result = latent_rm_accuracy(rm, gen, cache, eval_pairs, dims, shape, device, seed=cfg.seed,
                                        bins=cfg.noise_bins, batch_size=cfg.eval_batch_size)
            _write_eval(out, cfg, step, result, len(eval_pairs))
            evaluated.add(step)
        return None

    def finish():
        if main:
            save_latent_reward(rm, cfg.reward, out / "final", clip={"num_frames": cfg.num_frames,
                                                                     "height": cfg.height, "width": cfg.width,
                                                                     "fps": cfg.fps})
            console.print(f"saved latent reward model {out / 'final'} (load with load_latent_reward); accuracy by "
                          f"noise level in {out / 'eval.json'}", highlight=False)

    objective = Objective("pair", items, loss, summarize=train_accuracy)
    Trainer(cfg, accelerator, objective, model, rm, optimizer, scheduler, evaluate=evaluate,
            eval_every=cfg.eval_every, finish=finish).fit()
    return 0
