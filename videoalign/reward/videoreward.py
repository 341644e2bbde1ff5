"""`VideoReward`: the Python API for scoring videos. Loads any supported checkpoint and scores batches.

    rm = VideoReward.from_pretrained("KwaiVGI/VideoReward")          # or a folder, or "tiny-random"
    records = rm.score(["a.mp4", "b.mp4"], ["a prompt", "another prompt"])

Each record holds VQ/MQ/TA/Overall (normalised when the checkpoint has statistics, else raw), `raw`, the
sampling actually used (`num_frames`, `fps`, `max_pixels`, `grid_thw`) and `error` for a video that failed.
Decoding and resizing run in prefetching threads that overlap the model (see data.prefetch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from videoalign.data import prefetch, video_key
from videoalign.reward.inputs import RewardInputBuilder, TokenizedPrompt
from videoalign.reward.layouts import CheckpointError, is_reference_root, load_reference
from videoalign.reward.model import (
    DEFAULT_MODEL,
    DTYPES,
    RANDOM_MODELS,
    RewardConfig,
    VideoRewardModel,
    build_tiny_random,
    is_native,
    load_native,
    save_native,
)
from videoalign.reward.vision import preprocess_frames
from videoalign.video import read_video

log = logging.getLogger(__name__)


@dataclass
class PreparedVideo:
    """A decoded, resized, patchified and tokenised video, ready to collate."""

    pixels: object  # vision.VideoPixels
    tokens: TokenizedPrompt
    num_frames: int
    fps: float | None
    grid_thw: tuple[int, int, int]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is unknown; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


class VideoReward:
    """A loaded VideoReward model with its tokenizer, sampling settings and normalisation statistics."""

    def __init__(self, model: VideoRewardModel, tokenizer, config: RewardConfig, source: str = ""):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.source = source
        self.inputs = RewardInputBuilder(tokenizer, config.dims, config.template_type)

    # --- loading ------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_MODEL,
        *,
        base_model: str | None = None,
        checkpoint_step: int | None = None,
        dtype: str = "auto",
        device: str = "auto",
    ) -> VideoReward:
        """Load a hub id, a local folder (either reference layout or our own), `tiny-random` or
        `qwen2-vl-2b-random` (the real architecture, random weights: speed figures only)."""
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        if name_or_path in RANDOM_MODELS:
            model, tokenizer, config = build_tiny_random(dtype=torch_dtype, name=name_or_path)
            log.warning(config.note)
        else:
            path = Path(name_or_path)
            if not path.exists():
                path = _download(name_or_path)
            if is_native(path):
                model, tokenizer, config = load_native(path, torch_dtype)
            elif is_reference_root(path):
                model, tokenizer, config, _ = load_reference(path, torch_dtype, base_model, checkpoint_step)
            elif is_reference_root(path.parent) and path.name.startswith("checkpoint-"):
                step = int(path.name.split("-", 1)[1])
                model, tokenizer, config, _ = load_reference(path.parent, torch_dtype, base_model, step)
            else:
                raise CheckpointError(
                    f"{path}: not a VideoReward checkpoint (expected config.json from videoalign, or "
                    "model_config.json with checkpoint-<step>/); point --model at the checkpoint's root folder"
                )
        return cls(model.to(dev), tokenizer, config, source=str(name_or_path))

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Save in our own format (config.json + model.safetensors + tokenizer)."""
        return save_native(self.model, self.tokenizer, self.config, out_dir)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dims(self) -> list[str]:
        return list(self.config.dims)

    # --- scoring ------------------------------------------------------------------------------------------

    def sampling(self, fps: float | None = None, num_frames: int | None = None, max_pixels: int | None = None):
        """Effective (fps, num_frames, max_pixels): call arguments override the checkpoint's own settings."""
        if fps is not None and num_frames is not None:
            raise ValueError("--fps and --num-frames are exclusive: pass one of them")
        if num_frames is None and fps is None:
            fps, num_frames = self.config.fps, self.config.num_frames
        return fps, num_frames, max_pixels or self.config.max_pixels

    def prepare(self, path: str | Path, prompt: str, fps=None, num_frames=None, max_pixels=None) -> PreparedVideo:
        """Decode the sampled frames, resize, patchify and tokenise one video (runs in prefetch threads)."""
        self.inputs.check_prompt(prompt)
        fps, num_frames, max_pixels = self.sampling(fps, num_frames, max_pixels)
        frames = read_video(path, fps=fps, num_frames=num_frames)
        pixels = preprocess_frames(frames.frames, max_pixels=max_pixels, min_pixels=self.config.min_pixels)
        tokens = self.inputs.tokenize(prompt, pixels.num_tokens)
        return PreparedVideo(pixels, tokens, len(frames.indices), fps, tuple(pixels.grid_thw))

    @torch.inference_mode()
    def score_prepared(self, batch: list[PreparedVideo]) -> torch.Tensor:
        """Raw rewards (B, D) float32 on the CPU."""
        inputs = self.inputs.collate([p.tokens for p in batch], [p.pixels for p in batch])
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self.model(**inputs).float().cpu()

    def to_record(self, prepared: PreparedVideo, raw_scores: torch.Tensor, raw: bool = False) -> dict:
        """One output record. Normalised z-scores use float64 Python arithmetic, as the reference does."""
        values = [float(x) for x in raw_scores.tolist()]
        raw_map = dict(zip(self.dims, values))
        raw_map["Overall"] = sum(values)
        norm = self.config.normalization
        if norm and not raw:
            top = {d: (raw_map[d] - norm[d]["mean"]) / norm[d]["std"] for d in self.dims}
            top["Overall"] = sum(top[d] for d in self.dims)
        else:
            top = dict(raw_map)
        return {
            **top,
            "raw": raw_map,
            "normalized": bool(norm) and not raw,
            "num_frames": prepared.num_frames,
            "fps": prepared.fps,
            "grid_thw": list(prepared.grid_thw),
        }

    def score(self, videos, prompts, *, batch_size: int = 8, num_workers: int = 2, raw: bool = False,
              fps=None, num_frames=None, max_pixels=None) -> list[dict]:
        """Score videos against prompts; a failing video gives a record with `error` instead of scores."""
        videos, prompts = list(videos), list(prompts)
        if len(videos) != len(prompts):
            raise ValueError(f"got {len(videos)} videos but {len(prompts)} prompts; pass one prompt per video")
        results: list[dict] = []
        for chunk in self.iter_scores(list(zip(videos, prompts)), batch_size=batch_size, num_workers=num_workers,
                                      raw=raw, fps=fps, num_frames=num_frames, max_pixels=max_pixels):
            results.extend(record for _, record in chunk)
        return results

    def iter_scores(self, pairs, *, batch_size=8, num_workers=2, raw=False, fps=None, num_frames=None,
                    max_pixels=None):
        """Yield, per model batch, [(item, record)] for `pairs` of (video path or item, prompt).

        Items that fail to decode are yielded with their error in the same chunk as the batch they would have
        joined, so output order follows input order.
        """
        _, _, max_px = self.sampling(fps, num_frames, max_pixels)

        def work(pair):
            video, prompt = pair
            return self.prepare(getattr(video, "path", video), prompt, fps, num_frames, max_px)

        pending: list = []  # (pair, prepared | None, error | None)
        for pair, result in prefetch(work, pairs, workers=num_workers, ahead=max(2 * batch_size, num_workers)):
            if isinstance(result, Exception):
                pending.append((pair, None, _error_text(pair[0], result)))
            else:
                pending.append((pair, result, None))
            if sum(1 for _, p, _ in pending if p is not None) >= batch_size:
                yield self._flush(pending, raw, max_px)
                pending = []
        if pending:
            yield self._flush(pending, raw, max_px)

    def _flush(self, pending, raw, max_px) -> list[tuple]:
        ready = [p for _, p, _ in pending if p is not None]
        scores = iter(self.score_prepared(ready)) if ready else iter(())
        out = []
        for (video, prompt), prepared, error in pending:
            record = {"video": str(getattr(video, "video", video)),
                      "path": getattr(video, "key", None) or video_key(video), "prompt": prompt}
            if error is None:
                record.update(self.to_record(prepared, next(scores), raw))
                record["max_pixels"] = max_px
            else:
                record["error"] = error
            out.append(((video, prompt), record))
        return out


def _error_text(video, err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else err.__class__.__name__
    name = str(getattr(video, "video", video))
    return text if name in text else f"{name}: {text}"


def _download(repo_id: str) -> Path:
    """Fetch a hub checkpoint (model_config.json, the latest checkpoint-*/ or our format) into the HF cache."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    except Exception as err:
        raise CheckpointError(
            f"model {repo_id!r} is neither a local folder nor downloadable ({err.__class__.__name__}); "
            "pass a local checkpoint folder to --model (and --base-model for the base Qwen2-VL), or tiny-random"
        ) from None
