"""`videoalign bench speed dpo`: one Flow-DPO training step, ours against the paper pseudo-code's, in one process.

ours:  the real code path, `gen.objectives.dpo_step`: one LoRA transformer; the reference is the same transformer with
       its adapter disabled under no_grad (docs/numerics.md, Flow-DPO); chosen and rejected go through one concatenated
       forward (2 forwards per step: reference, policy); backward; AdamW step.
ours_split: `gen.objectives.dpo_split_step` (`backward: split`): the same gradient with one video's graph alive at a
       time (4 forwards of one video, 2 backwards): the activation memory of one video instead of two.
naive: the straightforward version of the paper's pseudo-code: a deepcopy of the base transformer as the frozen
       reference (requires_grad False) and a LoRA policy; four separate forwards (policy chosen, policy rejected,
       then reference chosen and rejected under no_grad); the same loss (flow.per_sample_mse, losses.flow_dpo_loss);
       backward; AdamW step.
All get the same template weights, LoRA init, latents, text, t and noise, so they compute the same loss
(tests/commands/bench/test_speed_dpo.py checks it). Latents (B, 16, (F-1)/4+1, H/8, W/8) and text (B, L, text_dim)
are random tensors of the right shapes: no VAE or text encoder runs.

Memory: each variant's peak from just before its models are built (the device copy of the template, the naive
reference copy, LoRA and its float32 masters) through its warm-up step and one more step, so it counts weights,
grads, AdamW state and activations; the template (kept on the CPU) and the shared inputs count on neither side.
Ours is built and measured first and stays alive; naive's window counts only what naive adds.
- CUDA: torch.cuda.max_memory_allocated() minus memory_allocated() before the build.
- CPU: `LiveTensorBytes`, a TorchDispatchMode that counts every storage an aten op allocates until it is freed.
  It does not see scratch buffers that a kernel allocates and frees inside one op; torch.profiler's allocator
  events (which do, but print to stderr and need a private API) gave peaks within 3% of it on the tiny model.
Time: then the two variants' training steps alternate, `steps` each, and each reports its median, so a slow spell
of a shared machine hits both alike (the device must hold both variants at once).

`--model wan2.1-1.3b-random` builds the real Wan2.1-T2V-1.3B transformer architecture from its config with random
weights (a GPU job: recipes/bench/speed_dpo.yaml).

1 process: videoalign bench speed dpo --model tiny-random --output bench_dpo.json
1 GPU:     videoalign bench speed dpo --recipe recipes/bench/speed_dpo.yaml --output bench_dpo.json
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from videoalign.gen.families import TINY_RANDOM, WAN_1_3B_RANDOM

#: (num_frames, height, width, lora_rank) when not set. tiny: the debug dpo recipe's clip size; rank 2 keeps the
#: adapter at ~5% of the tiny transformer, near rank 64's ~3% of the 1.3B one.
MODEL_DEFAULTS = {TINY_RANDOM: (9, 32, 32, 2), WAN_1_3B_RANDOM: (33, 480, 832, 64)}
TARGETS = {"time_ratio": 0.9, "memory_ratio": 0.6}


@dataclass
class SpeedDpoConfig:
    #: JSON file for the figures (printed as well)
    output: str | None = None
    #: tiny-random, or wan2.1-1.3b-random: the Wan2.1-T2V-1.3B transformer built from its config, random weights
    model: Literal["tiny-random", "wan2.1-1.3b-random"] = TINY_RANDOM
    #: frames per clip, 4k+1 (null: 9 on tiny-random, 33 on wan2.1-1.3b-random)
    num_frames: int | None = None
    #: clip height, a multiple of 16 (null: 32 on tiny-random, 480 on wan2.1-1.3b-random)
    height: int | None = None
    #: clip width, a multiple of 16 (null: 32 on tiny-random, 832 on wan2.1-1.3b-random)
    width: int | None = None
    #: pairs per step
    batch_size: int = 1
    #: timed steps per variant, after one warm-up step
    steps: int = 10
    #: transformer dtype; auto = bfloat16 on CUDA, float32 on CPU (float16 is refused for Wan)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    #: device: auto, cpu, cuda or cuda:N
    device: str = "auto"
    #: recompute activations in backward (both variants)
    gradient_checkpointing: bool = False
    #: LoRA rank on q/k/v/o of self- and cross-attention, alpha = 2 x rank (null: 2 on tiny-random, 64 on Wan)
    lora_rank: int | None = None
    #: DPO beta (the loss value only; it does not change the work)
    beta: float = 5000.0
    #: AdamW learning rate of both variants
    learning_rate: float = 5e-6
    #: seeds the weights, the LoRA init and the inputs
    seed: int = 0
    #: torch CPU threads (null: torch's default); 1 steadies the tiny model's timings on a busy machine
    threads: int | None = None

    def __post_init__(self):
        from videoalign.gen.families import WAN

        frames, height, width, rank = MODEL_DEFAULTS[self.model]
        self.num_frames = frames if self.num_frames is None else self.num_frames
        self.height = height if self.height is None else self.height
        self.width = width if self.width is None else self.width
        self.lora_rank = rank if self.lora_rank is None else self.lora_rank
        WAN.check_clip(self.num_frames, self.height, self.width)
        for name in ("batch_size", "steps", "lora_rank", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# -- inputs and models ----------------------------------------------------------------------------------------

@dataclass
class DpoInputs:
    """One micro-batch of random pairs, as the latent cache and the training loop would hand them over."""

    chosen: Any  # (B, C, F', H', W') float32 normalised latents
    rejected: Any  # (B, C, F', H', W')
    text: Any  # (B, L, D) float32 text-encoder states
    t: Any  # (B,) in [0, 1], shared by both videos of a pair
    noise: Any  # (B, C, F', H', W'), shared by both videos of a pair


class InputCache:
    """The two LatentCache methods `dpo_step` calls, served from DpoInputs (keys: the pairs' chosen/rejected
    paths and prompts, see `as_pairs`)."""

    def __init__(self, inputs: DpoInputs):
        self.inputs = inputs

    def load_video(self, path: Path):
        side, index = Path(path).parts
        return getattr(self.inputs, side)[int(index)]

    def load_prompt(self, prompt: str):
        return self.inputs.text[int(prompt)]


def as_pairs(inputs: DpoInputs) -> list:
    """labels.Pair keys of the inputs: A = chosen row i, B = rejected row i, prompt = text row i."""
    from videoalign.labels import Pair

    return [Pair(i + 1, str(i), f"chosen/{i}", f"rejected/{i}", Path("chosen", str(i)), Path("rejected", str(i)))
            for i in range(inputs.t.shape[0])]


def make_inputs(cfg: SpeedDpoConfig, gen, device) -> DpoInputs:
    """Seeded random latents, text, t (logit-normal and shifted, as training draws it) and noise."""
    import torch

    from videoalign.flow import sample_timesteps

    g = torch.Generator().manual_seed(cfg.seed + 1)
    shape = (cfg.batch_size, *gen.family.latent_shape(cfg.num_frames, cfg.height, cfg.width))
    text_shape = (cfg.batch_size, gen.text_max_length, gen.transformer.config.text_dim)
    tensors = dict(chosen=torch.randn(shape, generator=g), rejected=torch.randn(shape, generator=g),
                   text=torch.randn(text_shape, generator=g),
                   t=sample_timesteps(cfg.batch_size, gen.family.default_shift, generator=g),
                   noise=torch.randn(shape, generator=g))
    return DpoInputs(**{k: v.to(device) for k, v in tensors.items()})


@dataclass
class Variant:
    name: Literal["ours", "ours_split", "naive"]
    gen: Any  # a Generator whose transformer is this variant's LoRA policy
    reference: Any  # naive: the frozen full copy (a module); ours: None (the adapter is disabled instead)
    optimizer: Any
    beta: float


def build_variant(name: Literal["ours", "ours_split", "naive"], template, cfg: SpeedDpoConfig, device) -> Variant:
    """Copy the template to `device` (naive: and deepcopy it as the frozen reference), then LoRA with the same seed
    on both sides, float32 LoRA masters and AdamW, as gen/training.py sets up training."""
    import torch

    from videoalign.gen.families import WAN_LORA_TARGETS
    from videoalign.gen.lora import add_lora

    transformer = copy.deepcopy(template.transformer).to(device)
    reference = copy.deepcopy(transformer).requires_grad_(False).eval() if name == "naive" else None
    torch.manual_seed(cfg.seed)
    add_lora(transformer, cfg.lora_rank, 2.0 * cfg.lora_rank, WAN_LORA_TARGETS)
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    return Variant(name, dataclasses.replace(template, transformer=transformer), reference,
                   torch.optim.AdamW(params, lr=cfg.learning_rate), cfg.beta)


# -- the two losses -------------------------------------------------------------------------------------------

def ours_loss(variant: Variant, inputs: DpoInputs):
    """gen.objectives.dpo_step, as training calls it: (scalar loss, stats)."""
    from videoalign.gen.objectives import dpo_step
    from videoalign.gen.training import Parts

    transformer = variant.gen.transformer
    parts = Parts(variant.gen, model=transformer, transformer=transformer, reference=None)
    return dpo_step(parts, InputCache(inputs), as_pairs(inputs), inputs.t, inputs.noise, variant.beta)


def ours_split_loss(variant: Variant, inputs: DpoInputs):
    """gen.objectives.dpo_split_step (`backward: split`): runs its own backward passes; (detached loss, stats)."""
    import contextlib

    from videoalign.gen.objectives import dpo_split_step
    from videoalign.gen.training import Parts

    transformer = variant.gen.transformer
    parts = Parts(variant.gen, model=transformer, transformer=transformer, reference=None)
    return dpo_split_step(parts, InputCache(inputs), as_pairs(inputs), inputs.t, inputs.noise, variant.beta,
                          "constant", lambda loss: loss.backward(), contextlib.nullcontext)


def naive_loss(variant: Variant, inputs: DpoInputs):
    """The paper's pseudo-code: four separate forwards, the reference a frozen copy: (scalar loss, stats)."""
    import torch

    from videoalign.flow import add_noise, per_sample_mse, velocity_target
    from videoalign.losses import dpo_beta, flow_dpo_loss

    gen, policy, reference = variant.gen, variant.gen.transformer, variant.reference
    x0_w, x0_l, text, t, noise = inputs.chosen, inputs.rejected, inputs.text, inputs.t, inputs.noise
    x_t_w, x_t_l = add_noise(x0_w, noise, t), add_noise(x0_l, noise, t)  # (B, C, F', H', W') each
    v_w, v_l = velocity_target(x0_w, noise), velocity_target(x0_l, noise)
    policy_w = per_sample_mse(gen.velocity(x_t_w, t, text, transformer=policy), v_w)  # (B,)
    policy_l = per_sample_mse(gen.velocity(x_t_l, t, text, transformer=policy), v_l)
    with torch.no_grad():
        ref_w = per_sample_mse(gen.velocity(x_t_w, t, text, transformer=reference), v_w)
        ref_l = per_sample_mse(gen.velocity(x_t_l, t, text, transformer=reference), v_l)
    beta = dpo_beta(variant.beta, t, "constant").to(t.device)
    loss, stats = flow_dpo_loss(policy_w, policy_l, ref_w, ref_l, beta)
    return loss.mean(), stats


LOSSES = {"ours": ours_loss, "ours_split": ours_split_loss, "naive": naive_loss}
FORWARDS_PER_STEP = {"ours": 2, "ours_split": 4, "naive": 4}
VARIANTS = ("ours", "ours_split", "naive")


def train_step(variant: Variant, inputs: DpoInputs) -> float:
    """Loss, backward, AdamW step; returns the loss."""
    loss, _ = LOSSES[variant.name](variant, inputs)
    if loss.requires_grad:  # ours_split has run its backward passes
        loss.backward()
    variant.optimizer.step()
    variant.optimizer.zero_grad(set_to_none=True)
    return loss.item()


# -- measuring ------------------------------------------------------------------------------------------------

def build_and_measure(name: Literal["ours", "ours_split", "naive"], template, inputs: DpoInputs, cfg: SpeedDpoConfig,
                      device) -> tuple[Variant, dict]:
    """Build one variant and run its warm-up step (where the AdamW state appears) and one more step inside its
    memory window (module docstring). Returns the variant, still alive, and its memory figures."""
    import torch

    from videoalign.benchmark import LiveTensorBytes

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)  # the inputs, and ours when this is naive
        variant = build_variant(name, template, cfg, device)
        losses = [train_step(variant, inputs) for _ in range(2)]
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        with LiveTensorBytes() as tracker:
            variant = build_variant(name, template, cfg, device)
            losses = [train_step(variant, inputs) for _ in range(2)]
        peak = tracker.peak
    models = [variant.gen.transformer] + ([variant.reference] if variant.reference is not None else [])
    weights = {id(t.untyped_storage()): t.untyped_storage().nbytes()
               for m in models for t in [*m.parameters(), *m.buffers()]}
    return variant, {"peak_mb": round(peak / 2**20, 3), "weights_mb": round(sum(weights.values()) / 2**20, 3),
                     "forwards_per_step": FORWARDS_PER_STEP[name], "first_loss": round(losses[0], 6)}


def time_steps(variants: list[Variant], inputs: DpoInputs, steps: int, device) -> dict[str, list]:
    """Seconds per training step of each variant, alternating between them step by step, so a slow spell of a
    shared machine hits both alike."""
    from videoalign.benchmark import sync as _sync

    times: dict[str, list] = {v.name: [] for v in variants}
    for _ in range(steps):
        for variant in variants:
            _sync(device)
            start = time.perf_counter()
            train_step(variant, inputs)
            _sync(device)
            times[variant.name].append(time.perf_counter() - start)
    return times


MEMORY_METHODS = {
    "cuda": "torch.cuda.max_memory_allocated() minus memory_allocated() just before the variant's models are "
            "built, over the build, the warm-up step and one more step",
    "cpu": "peak live tensor bytes (LiveTensorBytes, a TorchDispatchMode counting storages that ops allocate, "
           "until freed) from just before the variant's models are built through its warm-up step and one more "
           "step",
}


def run(cfg: SpeedDpoConfig) -> int:
    from videoalign.benchmark import torch_threads

    with torch_threads(cfg.threads):
        return _run(cfg)


def _run(cfg: SpeedDpoConfig) -> int:

    from videoalign.benchmark import report, resolve_device_dtype, warm_cuda
    from videoalign.gen.tiny import transformer_only

    device, dtype = resolve_device_dtype(cfg.device, cfg.dtype)
    template = transformer_only(cfg.model, dtype, cfg.seed)
    inputs = make_inputs(cfg, template, device)
    if device.type == "cuda":
        warm_cuda(device, template.dtype)
    # 1. Memory: each variant's window opens before it is built (ours is built, measured and kept first).
    variants, figures_of = [], {}
    for name in VARIANTS:
        variant, figures_of[name] = build_and_measure(name, template, inputs, cfg, device)
        variants.append(variant)
    # 2. Time: the two variants' steps alternate.
    for name, times in time_steps(variants, inputs, cfg.steps, device).items():
        figures_of[name].update(step_s=round(statistics.median(times), 5), step_s_min=round(min(times), 5))
    ours, split, naive = figures_of["ours"], figures_of["ours_split"], figures_of["naive"]
    lora_params = sum(p.numel() for p in variants[0].gen.transformer.parameters() if p.requires_grad)
    time_ratio = ours["step_s"] / naive["step_s"]
    memory_ratio = ours["peak_mb"] / naive["peak_mb"]
    meets = {"time_ratio": time_ratio <= TARGETS["time_ratio"],
             "memory_ratio": memory_ratio <= TARGETS["memory_ratio"]}
    split_ratios = {"time_ratio": round(split["step_s"] / naive["step_s"], 4),
                    "memory_ratio": round(split["peak_mb"] / naive["peak_mb"], 4)}
    split_meets = {k: split_ratios[k] <= TARGETS[k] for k in TARGETS}
    figures = {
        "benchmark": "speed/dpo",
        "model": cfg.model,
        "num_frames": cfg.num_frames,
        "height": cfg.height,
        "width": cfg.width,
        "latent_shape": list(inputs.chosen.shape),
        "text_shape": list(inputs.text.shape),
        "batch_size": cfg.batch_size,
        "steps_timed": cfg.steps,
        "dtype": dtype,
        "device": str(device),
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "lora_rank": cfg.lora_rank,
        "base_params": sum(p.numel() for p in template.transformer.parameters()),
        "lora_params": lora_params,
        "ours": ours,
        "naive": naive,
        "time_ratio": round(time_ratio, 4),
        "memory_ratio": round(memory_ratio, 4),
        "targets": dict(TARGETS),
        "meets": meets,
        "ours_split": {**split, **split_ratios, "meets": split_meets},
        "meets_targets": all(meets.values()) or all(split_meets.values()),
        "memory_method": MEMORY_METHODS["cuda" if device.type == "cuda" else "cpu"],
        "memory_counts": "the variant's weights (naive: and its frozen reference copy), the LoRA with its float32 "
                         "masters, grads, AdamW state and activations; not the template or the shared inputs",
    }
    report(figures, cfg.output)
    return 0
