"""`videoalign guide`: Flow-NRG sampling, steered at inference by a noisy-latent reward model (docs/numerics.md, Flow-NRG).

Every Euler step shifts the CFG velocity by the reward gradient of the latent reward model (guidance.py):
`v <- v - W * t / (1 - t) * grad_x sum_d lambda_d r_phi,d(x_t, t, c)`, except at t = 1. The gradient runs
through the latent reward model's k blocks only, never through the video transformer or the VAE.

Outputs in `output_dir`, per prompt i (its position in the prompt list after `limit`; it samples with seed + i):
    <i:05d>.mp4            the guided video
    <i:05d>-compare.mp4    with --compare: guided | unguided (same seed) side by side
    <i:05d>-strip.png      with --compare: a few frames, guided above unguided
    guide.jsonl            one line per prompt: index, prompt, seed, video, weights, scale, trajectory (the latent
                           reward of the latents entering every step: t, weighted, rewards per dim, grad_rms),
                           final_reward (of the clean result, t = 0), latents_sha1 (of the final latents), and with
                           --compare a `compare` object with the same fields for the unguided sample
    guide.config.yaml      the resolved config: a rerun with other settings is refused
Prompts are sharded over processes (prompts[rank::world]). Each rank appends its finished lines to
`guide.jsonl.parts/rank<r>.jsonl` (one write + fsync per batch); at the end rank 0 merges them into guide.jsonl in
prompt order. A rerun skips prompts already done (same index and prompt, videos present), as `score` does.

1 GPU:  videoalign guide --recipe recipes/guide/wan2_1_t2v_1_3b.yaml --latent-rm runs/latent_rm/final --weights 0.1:0.1:0.8
N GPUs: accelerate launch --num_processes N -m videoalign guide --recipe recipes/guide/wan2_1_t2v_1_3b.yaml --latent-rm runs/latent_rm/final
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from videoalign.config import config_to_dict
from videoalign.gen.families import DEFAULT_MODEL

OUTPUT = "guide.jsonl"
CONFIG = "guide.config.yaml"
#: settings that change the outputs: an output_dir written with other values cannot be resumed into
GUIDE_SETTINGS = ("model", "latent_rm", "weights", "scale", "guidance_scale", "negative_prompt", "steps", "seed",
                  "num_frames", "height", "width", "fps", "shift", "dtype")
#: clip size when neither the config nor the latent reward model's config.json gives one (Wan2.1 480p)
DEFAULT_SHAPE = (81, 480, 832)


@dataclass
class GuideConfig:
    #: one prompt to sample (or use prompts)
    prompt: str | None = None
    #: prompt file: a CSV with a `prompt` column (../shared/data/eval_prompts/*.csv) or a .txt, one prompt a line
    prompts: str | None = None
    #: sample only the first N prompts of the file
    limit: int | None = None
    #: the video model: a diffusers folder, a hub id or tiny-random
    model: str = DEFAULT_MODEL
    #: latent reward model folder (save_latent_reward / train-latent-rm's output); required unless scale is 0
    latent_rm: str | None = None
    #: per-dimension weights lambda in the latent reward model's dims order, "0.1:0.1:0.8", or "TA=1"; null = 1 each
    weights: str | None = None
    #: guidance scale W (paper Table 5: 100); 0 = the plain sampler
    scale: float = 100.0
    #: classifier-free guidance scale (1 = no negative branch)
    guidance_scale: float = 5.0
    #: negative prompt of classifier-free guidance
    negative_prompt: str = ""
    #: Euler sampling steps
    steps: int = 50
    #: prompt i is sampled from seed + i (its position in the prompt list), whatever the sharding or batching
    seed: int = 0
    #: frames, 4k+1 (null: the latent reward model's recorded shape, else 81)
    num_frames: int | None = None
    #: clip height, a multiple of 16 (null: the latent reward model's recorded shape, else 480)
    height: int | None = None
    #: clip width, a multiple of 16 (null: the latent reward model's recorded shape, else 832)
    width: int | None = None
    #: frames per second written into the mp4s
    fps: float = 16.0
    #: flow shift of the sampling times (null: the family's, 3.0 for Wan)
    shift: float | None = None
    #: transformer and text encoder dtype; auto = bfloat16 on CUDA, float32 on CPU
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    #: auto, cpu, cuda or cuda:N (under accelerate launch each process uses its own device)
    device: str = "auto"
    #: videos, guide.jsonl and guide.config.yaml go here; a rerun resumes
    output_dir: str = "runs/guide"
    #: also sample without guidance from the same seed: side-by-side mp4 and a PNG strip
    compare: bool = False
    #: prompts sampled together per process (rows do not interact; seeds are per prompt)
    batch_size: int = 1
    #: frames in each row of the --compare PNG strip
    strip_frames: int = 4

    def __post_init__(self):
        from videoalign.gen.families import family_of

        if (self.prompt is None) == (self.prompts is None):
            raise ValueError("prompt / prompts: give exactly one, --prompt \"...\" or --prompts FILE (.csv or .txt)")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt: empty; give the text to sample")
        if self.prompts is not None and not Path(self.prompts).is_file():
            raise ValueError(f"prompts: {self.prompts}: no such file; give a CSV with a prompt column or a .txt")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if not math.isfinite(self.scale) or self.scale < 0:
            raise ValueError(f"scale must be a finite number >= 0 (the guidance scale W; 0 = unguided), got "
                             f"{self.scale}")
        if self.scale != 0 and not self.latent_rm:
            raise ValueError("latent_rm is required when scale > 0: pass --latent-rm FOLDER (from train-latent-rm), "
                             "or --scale 0 for plain sampling")
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        for name in ("steps", "batch_size", "strip_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.shift is not None and self.shift <= 0:
            raise ValueError(f"shift must be positive, got {self.shift}")
        family = family_of(self.model)
        if self.dtype in family.refused_dtypes:
            raise ValueError(f"dtype {self.dtype}: {family.refused_dtypes[self.dtype]}")
        family.check_clip(self.num_frames, self.height, self.width)


# -- inputs ---------------------------------------------------------------------------------------------------

def read_prompts(cfg: GuideConfig) -> list[str]:
    """The prompt list: --prompt, or the file's (CSV `prompt` column / .txt lines, blank lines skipped), first
    `limit`."""
    if cfg.prompt is not None:
        prompts = [cfg.prompt]
    else:
        from videoalign.data import read_prompt_file

        prompts = read_prompt_file(cfg.prompts)
    return prompts[:cfg.limit] if cfg.limit else prompts


def recorded_shape(latent_rm: str | None) -> tuple[int | None, int | None, int | None]:
    """(num_frames, height, width) from the latent reward model's config.json, where it records them."""
    if not latent_rm:
        return None, None, None
    path = Path(latent_rm)
    meta_file = (path.parent if path.is_file() else path) / "config.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None, None, None
    return tuple(meta.get(k) for k in ("num_frames", "height", "width"))


def resolve_shape(cfg: GuideConfig) -> GuideConfig:
    """Fill num_frames/height/width from the latent reward model, else DEFAULT_SHAPE (re-validated)."""
    recorded = recorded_shape(cfg.latent_rm)
    values = {}
    for name, rec, default in zip(("num_frames", "height", "width"), recorded, DEFAULT_SHAPE):
        values[name] = getattr(cfg, name) if getattr(cfg, name) is not None else (rec or default)
    return dataclasses.replace(cfg, **values)


def load_reward(cfg: GuideConfig, device):
    """(latent reward model or None, weights {dim: lambda} or None). Errors name the field and what it expects."""
    from videoalign.gen.guidance import parse_guidance_weights
    from videoalign.gen.latent_reward import load_latent_reward

    if not cfg.latent_rm:
        return None, None
    if not Path(cfg.latent_rm).exists():
        raise ValueError(f"latent_rm: {cfg.latent_rm}: no such folder; pass the output of train-latent-rm")
    rm = load_latent_reward(cfg.latent_rm, device=device).requires_grad_(False)
    text = cfg.weights if cfg.weights is not None else ":".join(["1"] * len(rm.dims))
    try:
        weights = parse_guidance_weights(text, rm.dims)
    except ValueError as exc:
        raise ValueError(f"weights: the latent reward model has dims {':'.join(rm.dims)}; {exc}") from None
    return rm, weights


def check_compatible(rm, gen, cfg: GuideConfig) -> None:
    """The latent reward model must read this generator's latents and text states (raises with expected vs got)."""
    channels = int(gen.transformer.config.in_channels)
    shape = gen.family.latent_shape(cfg.num_frames, cfg.height, cfg.width, channels=channels)
    try:
        rm.check_compatible(shape, int(gen.transformer.config.text_dim))
    except ValueError as exc:
        raise ValueError(f"latent_rm {cfg.latent_rm} does not fit the video model {cfg.model}: {exc}") from None


# -- resuming -------------------------------------------------------------------------------------------------

def guide_output(out: Path):
    """guide.jsonl as a ResumableOutput: lines keyed by prompt index, settings in guide.config.yaml."""
    from videoalign.resumable import ResumableOutput

    return ResumableOutput(out / OUTPUT, lambda r: int(r["index"]), out / CONFIG)


def is_done(index: int, prompt: str, done: dict[int, dict], out: Path, compare: bool) -> bool:
    record = done.get(index)
    if record is None or record.get("prompt") != prompt or not (out / record["video"]).is_file():
        return False
    return not compare or ("compare" in record and all((out / record["compare"][k]).is_file()
                                                        for k in ("video", "side_by_side", "strip")))


# -- sampling -------------------------------------------------------------------------------------------------

def guide_batch(gen, rm, weights, items: list[tuple[int, str]], cfg: GuideConfig, out: Path, negative_row):
    """Sample, decode and write the videos of `items` [(index, prompt)]; returns their JSON lines."""
    import torch

    from videoalign.gen.guidance import guided_sample, latents_sha1
    from videoalign.video import write_video

    shape = gen.family.latent_shape(cfg.num_frames, cfg.height, cfg.width,
                                    channels=int(gen.transformer.config.in_channels))
    text = gen.pad_text(gen.encode_prompts([p for _, p in items]))  # (B, L, D) float32
    use_cfg = cfg.guidance_scale != 1.0
    negative = negative_row.expand(len(items), *negative_row.shape[1:]) if use_cfg else None
    seeds = [cfg.seed + index for index, _ in items]
    # 1. guided (scale 0 = the plain sampler, still recording the latent reward along the way)
    x0, trajectories, finals = guided_sample(gen, rm, weights, text, negative, seeds, shape, cfg, cfg.scale)
    frames = gen.decode(x0)  # (B, F, H, W, 3) uint8
    # 2. with --compare: unguided from the same seeds
    if cfg.compare:
        plain, plain_traj, plain_finals = guided_sample(gen, rm, weights, text, negative, seeds, shape, cfg, 0.0)
        plain_frames = gen.decode(plain)
    lines = []
    for b, (index, prompt) in enumerate(items):
        name = f"{index:05d}"
        write_video(out / f"{name}.mp4", frames[b], cfg.fps)
        line = {"index": index, "prompt": prompt, "seed": seeds[b], "video": f"{name}.mp4", "weights": weights,
                "scale": cfg.scale, "trajectory": trajectories[b], "final_reward": finals[b],
                "latents_sha1": latents_sha1(x0[b])}
        if cfg.compare:
            from videoalign.plots import frame_strip

            write_video(out / f"{name}-unguided.mp4", plain_frames[b], cfg.fps)
            write_video(out / f"{name}-compare.mp4", torch.cat([frames[b], plain_frames[b]], dim=2), cfg.fps)
            frame_strip({f"guided (W={cfg.scale:g})": frames[b].numpy(), "unguided": plain_frames[b].numpy()},
                        out / f"{name}-strip.png", cfg.strip_frames, title=prompt[:90])
            line["compare"] = {"video": f"{name}-unguided.mp4", "side_by_side": f"{name}-compare.mp4",
                               "strip": f"{name}-strip.png", "trajectory": plain_traj[b],
                               "final_reward": plain_finals[b], "latents_sha1": latents_sha1(plain[b])}
        lines.append(line)
    return lines


def run(cfg: GuideConfig) -> int:
    import torch

    from videoalign.distributed import make_accelerator, shard
    from videoalign.gen.generator import load_generator
    from videoalign.log import console, progress

    # 1. everything that can fail at once, before any sampling
    cfg = resolve_shape(cfg)
    prompts = read_prompts(cfg)
    if not prompts:
        raise ValueError(f"prompts: {cfg.prompts} holds no prompts")
    accelerator = make_accelerator(cfg.device)
    device = accelerator.device
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    cfg = dataclasses.replace(cfg, dtype=dtype)
    rm, weights = load_reward(cfg, device)
    out = Path(cfg.output_dir)
    output = guide_output(out)
    output.check_settings({k: getattr(cfg, k) for k in GUIDE_SETTINGS}, "videos")
    gen = load_generator(cfg.model, dtype, device)
    if rm is not None:
        check_compatible(rm, gen, cfg)

    # 2. what is left to do, sharded round-robin
    rank, world = accelerator.process_index, accelerator.num_processes
    done = output.done()
    items = list(enumerate(prompts))
    pending = [(i, p) for i, p in items if not is_done(i, p, done, out, cfg.compare)]
    mine = shard(pending, rank, world)
    accelerator.wait_for_everyone()  # every rank has read the old state before rank 0 writes the config
    if accelerator.is_main_process:
        output.save_settings(config_to_dict(cfg))
        console.print(f"{len(items)} prompts: {len(items) - len(pending)} already done, {len(pending)} to sample "
                      f"on {world} process(es); W = {cfg.scale:g}, weights {weights}", highlight=False)

    # 3. sample, decode, write; each batch's lines go to this rank's part file at once
    negative = None
    if mine and cfg.guidance_scale != 1.0:
        negative = gen.pad_text(gen.encode_prompts([cfg.negative_prompt]))  # (1, L, D)
    with progress(len(mine), "guided sampling", enabled=accelerator.is_main_process) as bar, torch.no_grad():
        for start in range(0, len(mine), cfg.batch_size):
            chunk = mine[start:start + cfg.batch_size]
            output.append(rank, guide_batch(gen, rm, weights, chunk, cfg, out, negative))
            bar.advance(len(chunk))
    accelerator.wait_for_everyone()

    # 4. rank 0 merges everything into guide.jsonl in prompt order (other indices kept after)
    if accelerator.is_main_process:
        ordered = output.merge([i for i, _ in items])
        summary = [r["final_reward"]["weighted"] for r in ordered if r.get("final_reward")]
        mean = f", mean final weighted latent reward {sum(summary) / len(summary):.4f}" if summary else ""
        console.print(f"wrote {len(ordered)} videos and {output.path}{mean}", highlight=False)
    accelerator.wait_for_everyone()
    return 0
