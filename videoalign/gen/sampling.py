"""Sampling videos to files: the models a comparison samples from (a base, and an aligned LoRA, fine-tune or
pipeline of it) and the sampler that writes one mp4 per (prompt, seed), whatever the batching.

Video j of prompt i comes from seed + i * K + j (K videos per prompt; seed + i for K = 1), named <i:05d>.mp4 for
K = 1 and <i:05d>-<j:02d>.mp4 otherwise: bench winrate and guide write and read the same names.
"""

from __future__ import annotations

from videoalign.gen.families import model_kind


def video_name(index: int, video: int, per_prompt: int) -> str:
    return f"{index:05d}.mp4" if per_prompt == 1 else f"{index:05d}-{video:02d}.mp4"


def load_aligned(aligned: str, base: str, dtype: str, device, gen=None):
    """The generator of an aligned model: a pipeline is loaded on its own; a LoRA (dpo/rwr's final/) is fused into
    the base (`gen`, the base already loaded, is reused), a full fine-tune's transformer replaces the base's.
    A LoRA or fine-tune that does not fit the base is a ValueError naming the field `aligned`."""
    from videoalign.gen.generator import load_generator
    from videoalign.gen.lora import load_lora, load_transformer

    if model_kind(aligned) == "pipeline":
        return load_generator(aligned, dtype, device)
    gen = gen or load_generator(base, dtype, device)
    if model_kind(aligned) == "transformer":
        try:
            return load_transformer(gen, aligned)
        except ValueError as exc:
            raise ValueError(f"aligned: {exc}; pass the model it was fine-tuned from as --base ({base} now)") from None
    try:
        return load_lora(gen, aligned, fuse=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ValueError(f"aligned: cannot load the LoRA {aligned} onto --base {base}: "
                         f"{str(exc).splitlines()[0]}") from None


def sample_videos(gen, jobs: list[tuple], cfg, description: str, show: bool) -> None:
    """Sample, decode and write (atomically) one video per job (path, prompt, seed), batch_size at a time. `cfg`
    has steps, shift, guidance_scale, negative_prompt, num_frames, height, width, fps and batch_size. Each row's
    noise comes from its own seed, so a video does not depend on the batch it was sampled in."""
    import torch

    from videoalign.log import progress
    from videoalign.video import write_video

    shape = gen.family.latent_shape(cfg.num_frames, cfg.height, cfg.width,
                                    channels=int(gen.transformer.config.in_channels))
    use_cfg = cfg.guidance_scale != 1.0
    negative = gen.pad_text(gen.encode_prompts([cfg.negative_prompt])) if use_cfg else None  # (1, L, D)
    with progress(len(jobs), description, enabled=show) as bar, torch.no_grad():
        for start in range(0, len(jobs), cfg.batch_size):
            chunk = jobs[start:start + cfg.batch_size]
            text = gen.pad_text(gen.encode_prompts([prompt for _, prompt, _ in chunk]))  # (B, L, D)
            neg = negative.expand(len(chunk), *negative.shape[1:]) if use_cfg else None
            x0 = gen.sample(text, [seed for _, _, seed in chunk], shape, cfg.steps, cfg.shift, cfg.guidance_scale,
                            neg)
            for (path, _, _), frames in zip(chunk, gen.decode(x0)):  # (F, H, W, 3) uint8 each
                write_video(path, frames, cfg.fps)
            bar.advance(len(chunk))
