"""Latent cache: every training video encoded once to normalised VAE latents, every prompt once to text states.

    <cache_dir>/<spec key>/spec.json                  what the entries were made with (model, frames, size, fps)
                           videos/<key>.safetensors    "latents" (C, F', H', W') float32
                           prompts/<key>.safetensors   "text" (n, D) float32, the n real tokens
                           errors/rank<r>.jsonl        {"video", "error"} of clips that could not be encoded

The spec key is a hash of the spec, so a recipe with another size or frame count gets its own entries and a
re-run with the same spec reuses them. A video's key hashes its absolute path, size and mtime, so a changed file
is encoded again. Entries are written to a temp file and renamed (a kill leaves no half entry), and each process
encodes every world-th missing item, so the cache is sharded across processes and resumable.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

Resize = Literal["crop", "stretch"]


@dataclass(frozen=True)
class CacheSpec:
    model: str
    num_frames: int
    height: int
    width: int
    fps: float | None
    resize: Resize
    text_max_length: int

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def fit_frames(frames: torch.Tensor, height: int, width: int, mode: Resize = "crop") -> torch.Tensor:
    """uint8 (F, H, W, 3) -> uint8 (F, height, width, 3). crop: scale to cover, then centre-crop (keeps the
    aspect ratio); stretch: resize to exactly height x width. Bilinear with antialiasing."""
    import torch.nn.functional as F

    x = frames.permute(0, 3, 1, 2).float()  # (F, 3, H, W)
    h, w = x.shape[-2:]
    if mode == "crop":
        scale = max(height / h, width / w)
        size = (max(height, round(h * scale)), max(width, round(w * scale)))
    else:
        size = (height, width)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    x = x[..., top:top + height, left:left + width]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def load_frames(path: Path, spec: CacheSpec) -> torch.Tensor:
    """uint8 (F, H, W, 3): the spec's frames of a clip, at the spec's size."""
    from videoalign.video import read_clip

    return fit_frames(read_clip(path, spec.num_frames, spec.fps), spec.height, spec.width, spec.resize)


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:24]


class LatentCache:
    def __init__(self, cache_dir: str | Path, spec: CacheSpec):
        self.spec = spec
        self.root = Path(cache_dir) / spec.key

    def video_file(self, path: Path) -> Path:
        path = Path(path).resolve()
        st = path.stat()
        return self.root / "videos" / f"{_hash(f'{path}|{st.st_size}|{st.st_mtime_ns}')}.safetensors"

    def prompt_file(self, prompt: str) -> Path:
        return self.root / "prompts" / f"{_hash(prompt)}.safetensors"

    def has_video(self, path: Path) -> bool:
        return Path(path).is_file() and self.video_file(path).is_file()

    def has_prompt(self, prompt: str) -> bool:
        return self.prompt_file(prompt).is_file()

    def load_video(self, path: Path) -> torch.Tensor:
        from safetensors.torch import load_file

        return load_file(str(self.video_file(path)))["latents"]

    def load_prompt(self, prompt: str) -> torch.Tensor:
        from safetensors.torch import load_file

        return load_file(str(self.prompt_file(prompt)))["text"]

    def errors(self) -> dict[str, str]:
        """{absolute video path: error} recorded by any process."""
        from videoalign.data import read_jsonl

        out = {}
        for part in sorted((self.root / "errors").glob("rank*.jsonl")):
            for record in read_jsonl(part):
                out[record["video"]] = record["error"]
        return out

    def put_video(self, path: Path, latents: torch.Tensor) -> None:
        """Store the normalised latents (C, F', H', W') of `path` (build() does this; tests and tools may too)."""
        self._write(self.video_file(path), "latents", latents.float(), {"video": str(Path(path).resolve())})

    def put_prompt(self, prompt: str, text: torch.Tensor) -> None:
        """Store a prompt's text states (n, D) at its n real tokens."""
        self._write(self.prompt_file(prompt), "text", text.float(), {"prompt": prompt[:200]})

    def _write(self, file: Path, key: str, tensor: torch.Tensor, meta: dict) -> None:
        from safetensors.torch import save_file

        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        save_file({key: tensor.contiguous()}, str(tmp), metadata={k: str(v) for k, v in meta.items()})
        os.replace(tmp, file)

    def build(self, gen, videos: list[Path], prompts: list[str], rank: int = 0, world: int = 1,
              num_workers: int = 2, bar=None) -> tuple[int, int]:
        """Encode this process's share (every world-th) of the missing videos and prompts. Returns (encoded,
        failed); failures are appended to errors/rank<r>.jsonl and the item is retried on the next run.
        `bar.advance(n)` reports progress (one unit per item)."""
        from videoalign.data import append_jsonl, prefetch
        self.root.mkdir(parents=True, exist_ok=True)
        spec_file = self.root / "spec.json"
        if rank == 0 and not spec_file.is_file():
            from videoalign.data import write_atomic

            write_atomic(spec_file, json.dumps(asdict(self.spec), indent=2))
        # shard the full sorted lists, then drop what exists: every rank agrees on the shards whatever the others
        # have written meanwhile
        todo_prompts = [p for p in sorted(set(prompts))[rank::world] if not self.has_prompt(p)]
        for start in range(0, len(todo_prompts), 8):
            chunk = todo_prompts[start:start + 8]
            for prompt, text in zip(chunk, gen.encode_prompts(chunk)):
                self.put_prompt(prompt, text)
            if bar is not None:
                bar.advance(len(chunk))
        unique = sorted({str(Path(v).resolve()) for v in videos if Path(v).is_file()})  # readers report the rest
        todo = [Path(v) for v in unique[rank::world] if not self.has_video(Path(v))]
        spec = self.spec

        encoded = failed = 0
        for path, clip in prefetch(lambda path: load_frames(path, spec), todo, num_workers, ahead=2):
            if isinstance(clip, Exception):
                append_jsonl(self.root / "errors" / f"rank{rank}.jsonl", [{"video": str(path), "error": str(clip)}])
                failed += 1
            else:
                self.put_video(path, gen.encode_video(clip))
                encoded += 1
            if bar is not None:
                bar.advance(1)
        return encoded, failed

    def todo_count(self, videos: list[Path], prompts: list[str]) -> int:
        """Missing entries (all processes together)."""
        unique = {str(Path(v).resolve()) for v in videos if Path(v).is_file()}
        return (sum(not self.has_video(Path(v)) for v in unique)
                + sum(not self.has_prompt(p) for p in set(prompts)))


class OnTheFlyLatents:
    """The LatentCache interface without a cache: every load decodes and encodes again. For checking that the
    cache changes nothing (training on either gives the same numbers) and for one-off runs; a clip that cannot
    be read raises when it is first needed."""

    def __init__(self, gen, spec: CacheSpec):
        self.gen, self.spec = gen, spec

    def has_video(self, path: Path) -> bool:
        return Path(path).is_file()

    def load_video(self, path: Path) -> torch.Tensor:
        return self.gen.encode_video(load_frames(Path(path), self.spec))

    def load_prompt(self, prompt: str) -> torch.Tensor:
        return self.gen.encode_prompts([prompt])[0]
