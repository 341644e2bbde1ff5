"""The diffusers side: load a rectified-flow text-to-video model, encode prompts and videos, velocity, LoRA, sampling.

The model family (families.py) says what differs between families; `tiny-random` (tiny.py) is a seeded tiny Wan
for tests and offline runs that saves and loads like a real diffusers folder; LoRA lives in lora.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from videoalign.flow import euler_step, sampling_times
from videoalign.gen.families import DEFAULT_MODEL, TINY_RANDOM, Family, family_of

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Generator:
    """A loaded text-to-video model. The VAE stays in float32; the transformer runs in `dtype`."""

    family: Family
    transformer: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    dtype: torch.dtype
    text_max_length: int

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device) -> Generator:
        for module in (self.transformer, self.vae, self.text_encoder):
            module.to(device)
        return self

    # -- encoding -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> list[torch.Tensor]:
        """One (n_i, D) float32 tensor per prompt: the text encoder's states at the n_i real tokens (as WanPipeline
        computes them); `pad_text` restores the zero-padded (B, max_length, D) the transformer sees."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        device = next(self.text_encoder.parameters()).device
        inputs = self.tokenizer([prompt_clean(p) for p in prompts], padding="max_length",
                                max_length=self.text_max_length, truncation=True, add_special_tokens=True,
                                return_attention_mask=True, return_tensors="pt")
        mask = inputs.attention_mask
        states = self.text_encoder(inputs.input_ids.to(device), mask.to(device)).last_hidden_state.float().cpu()
        return [s[:n] for s, n in zip(states, mask.gt(0).sum(dim=1).tolist())]

    def pad_text(self, embeds: list[torch.Tensor]) -> torch.Tensor:
        """(B, max_length, D) with zeros after each prompt's real tokens."""
        out = embeds[0].new_zeros(len(embeds), self.text_max_length, embeds[0].shape[-1])
        for row, e in zip(out, embeds):
            row[:e.shape[0]] = e
        return out

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        shape = (1, len(cfg.latents_mean), 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32, device=like.device).view(shape)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32, device=like.device).view(shape)
        return mean, std

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (F, H, W, 3) -> normalised latents (C, F', H', W') float32: z = (mode - mean) / std."""
        device = next(self.vae.parameters()).device
        pixels = frames.permute(3, 0, 1, 2).unsqueeze(0).to(device, torch.float32) / 127.5 - 1  # (1, 3, F, H, W)
        z = self.vae.encode(pixels).latent_dist.mode()
        mean, std = self._latent_stats(z)
        return ((z - mean) / std)[0].float().cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, F', H', W') -> uint8 frames (B, F, H, W, 3)."""
        device = next(self.vae.parameters()).device
        z = latents.to(device, torch.float32)
        mean, std = self._latent_stats(z)
        video = self.vae.decode(z * std + mean).sample  # (B, 3, F, H, W) in [-1, 1]
        return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()

    # -- the transformer ------------------------------------------------------------------------------------
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, transformer=None) -> torch.Tensor:
        """v_theta(x_t, t, text) in float32: x_t (B, C, F', H', W'), t (B,) in [0, 1], text (B, L, D)."""
        model = transformer if transformer is not None else self.transformer
        timestep = (t.float() * self.family.timestep_scale).to(x_t.device)
        # Full fine-tuning turns the generator's own transformer into float32 masters: then every forward (the
        # policy, and the frozen reference passed as `transformer`, so that both compute alike) runs in self.dtype
        # under autocast. The patch embedding tells (cast_module never keeps it in float32; scale_shift_table, which may
        # come first, it does).
        probe = getattr(self.transformer, "patch_embedding", None)
        masters = probe is not None and probe.weight.dtype == torch.float32 and self.dtype != torch.float32
        if not masters:
            out = model(hidden_states=x_t.to(self.dtype), timestep=timestep,
                        encoder_hidden_states=text.to(self.dtype), return_dict=False)[0]
            return out.float()
        with torch.autocast(device_type=x_t.device.type, dtype=self.dtype):
            out = model(hidden_states=x_t.float(), timestep=timestep, encoder_hidden_states=text.float(),
                        return_dict=False)[0]
        return out.float()

    @torch.no_grad()
    def sample(self, text: torch.Tensor, seeds: list[int], latent_shape: tuple[int, ...], steps: int = 50,
               shift: float | None = None, guidance_scale: float = 5.0, negative_text: torch.Tensor | None = None,
               velocity_hook=None) -> torch.Tensor:
        """Euler sampling from t = 1 to 0 (normalised latents (B, C, F', H', W') float32).

        text (B, L, D); noise of row i is randn(latent_shape) from torch.Generator().manual_seed(seeds[i]) on the
        CPU, so samples do not depend on the batch or the device. CFG: v = v_neg + g (v_cond - v_neg) when
        negative_text (B, L, D) is given and g != 1. `velocity_hook(x, t, v) -> v` may change v (reward guidance).
        """
        device = self.device
        noise = [torch.randn(latent_shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        x = torch.stack(noise).to(device)
        cfg = negative_text is not None and guidance_scale != 1.0
        cond = torch.cat([text, negative_text]) if cfg else text
        times = sampling_times(steps, self.family.default_shift if shift is None else shift).tolist()
        for t, t_next in zip(times[:-1], times[1:]):
            batch_t = torch.full((x.shape[0] * (2 if cfg else 1),), t)
            v = self.velocity(torch.cat([x, x]) if cfg else x, batch_t, cond.to(device))
            if cfg:
                v_cond, v_neg = v.chunk(2)
                v = v_neg + guidance_scale * (v_cond - v_neg)
            if velocity_hook is not None:
                v = velocity_hook(x, t, v)
            x = euler_step(x, v, t, t_next)
        return x.float()


def load_generator(model: str = DEFAULT_MODEL, dtype: str = "bfloat16", device: str | torch.device = "cpu",
                   seed: int = 0) -> Generator:
    """tiny-random, a diffusers pipeline folder or a hub id. The transformer and text encoder take `dtype`,
    the VAE float32. Refused dtypes (fp16 on Wan) raise with the reason."""
    family = family_of(model)
    if dtype in family.refused_dtypes:
        raise ValueError(f"dtype {dtype}: {family.refused_dtypes[dtype]}")
    torch_dtype = DTYPES[dtype]
    if model == TINY_RANDOM:
        from videoalign.gen.tiny import tiny_random_components

        parts = tiny_random_components(seed)
    else:
        parts = _load_parts(model, torch_dtype)
    tokenizer = parts["tokenizer"]
    max_length = min(family.text_max_length, int(getattr(tokenizer, "model_max_length", family.text_max_length)))
    gen = Generator(family, cast_module(parts["transformer"], torch_dtype), cast_module(parts["vae"], torch.float32),
                    cast_module(parts["text_encoder"], torch_dtype), tokenizer, torch_dtype, max_length)
    for module in (gen.transformer, gen.vae, gen.text_encoder):
        module.requires_grad_(False).eval()
    return gen.to(device)


def cast_module(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast to dtype but keep the model's `_keep_in_fp32_modules` (Wan: rope, time embedder, norms) in float32, as
    from_pretrained(torch_dtype=...) does; a no-op when already there."""
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or [])
    if hasattr(module, "_keep_in_fp32_modules_strict"):
        # transformers applies `_keep_in_fp32_modules` for float16 only (UMT5's `wo` stays bf16 in bf16), and the
        # `_strict` list for float16 and bfloat16
        keep = (keep if dtype == torch.float16 else set()) | set(module._keep_in_fp32_modules_strict or [])
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        # tensors of kept modules (and kept parameters such as Wan's scale_shift_table) never pass through dtype:
        # casting everything and back would round them
        target = torch.float32 if dtype != torch.float32 and keep & set(name.split(".")) else dtype
        if tensor.is_floating_point() and tensor.dtype != target:
            tensor.data = tensor.data.to(target)
    return module


def _load_parts(model: str, torch_dtype) -> dict:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    root = Path(model)
    if not root.is_dir():
        from huggingface_hub import snapshot_download

        try:
            root = Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "tokenizer/*",
                                                                 "*.model", "*.txt"]))
        except Exception as exc:
            raise ValueError(f"{model}: cannot download from the Hugging Face hub ({type(exc).__name__}); download "
                             "it and pass its folder, or use tiny-random") from None
    return {"transformer": WanTransformer3DModel.from_pretrained(root, subfolder="transformer", torch_dtype=torch_dtype),
            "vae": AutoencoderKLWan.from_pretrained(root, subfolder="vae", torch_dtype=torch.float32),
            "text_encoder": UMT5EncoderModel.from_pretrained(root / "text_encoder", dtype=torch_dtype),
            "tokenizer": AutoTokenizer.from_pretrained(root / "tokenizer")}


def save_pipeline(gen: Generator, out_dir: str | Path, scheduler=None) -> Path:
    """Save as a diffusers WanPipeline folder (what load_generator and WanPipeline.from_pretrained read)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    pipe = WanPipeline(tokenizer=gen.tokenizer, text_encoder=gen.text_encoder, vae=gen.vae,
                       transformer=gen.transformer,
                       scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=gen.family.default_shift))
    pipe.save_pretrained(str(out_dir))
    return Path(out_dir)
