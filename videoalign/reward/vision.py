"""Qwen2-VL frame preprocessing without torchvision: resize, normalise, patchify, grid_thw.

It owns docs/numerics.md, Resize and Pixels and patches and reproduces, bit for bit, the
`pixel_values_videos` and `video_grid_thw` that the reference builds with torchvision 0.18 and
transformers 4.45.2's `Qwen2VLImageProcessor`:

1. `smart_resize`: the target (h, w), multiples of 28, in Python float64 (1.4).
2. `resize_frames`: bicubic antialiased resize of uint8 frames, clamp, round, uint8 (1.5).
3. `normalize_frames`: ``float32(float64(k) * (1/255))`` then CLIP mean/std in float32 (2.1).
4. `patchify`: rows of 3*2*14*14 = 1176 values in the merger's row order (2.2).

`preprocess_frames` chains them. Decoding and frame sampling live in `video.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGE_FACTOR = 28  # PATCH_SIZE * MERGE_SIZE: resized sides are multiples of this
VIDEO_MIN_PIXELS = 128 * 28 * 28  # 100352
DEFAULT_MAX_PIXELS = 200704  # 256 * 28 * 28 = 448**2, the released data_config.max_frame_pixels
MAX_RATIO = 200
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, used as float32
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
PATCH_DIM = 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE  # 1176


def smart_resize(
    height: int,
    width: int,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """Target (h, w) for a (height, width) frame (docs/numerics.md, Resize), both multiples of ``factor``.

    Python float64 with the reference's exact expression order: boundary cases such as
    720x1280, where ``H / beta / 28`` is exactly 12.0, depend on it. After the max_pixels branch
    the result is deliberately not re-checked against min_pixels.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"frame size {height}x{width} has aspect ratio "
            f"{max(height, width) / min(height, width):.1f} > {MAX_RATIO}; crop the video"
        )
    h_bar = max(factor, round(height / factor) * factor)  # round: half to even
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if h_bar <= 0 or w_bar <= 0:
        # Only reachable with a max_pixels far below the defaults; the reference would crash later.
        raise ValueError(
            f"frame size {height}x{width} resizes to {h_bar}x{w_bar} with max_pixels={max_pixels}; "
            f"raise max_pixels to at least {factor * factor * 4}"
        )
    return h_bar, w_bar


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize uint8 (T, 3, H, W) frames to uint8 (T, 3, height, width) (docs/numerics.md, Resize).

    Reproduces torchvision's ``resize(BICUBIC, antialias=True)`` on a uint8 tensor: float32,
    antialiased bicubic, clamp to [0, 255], round half to even, uint8. Frames that are already
    the right size come back unchanged (same object). Runs on CPU because GPU interpolation is not
    guaranteed to be bit-identical.
    """
    _check_uint8_frames(frames)
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    x = frames.detach().to("cpu", torch.float32)  # (T, 3, H, W)
    x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return x.clamp_(0, 255).round_().to(torch.uint8)  # (T, 3, height, width)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, 3, h, w) -> float32 (T, 3, h, w), CLIP-normalised (docs/numerics.md, Pixels and patches), bit-exact.

    The rescale multiplies by the double 1/255 and then casts, as transformers' ``rescale`` does;
    dividing by 255 in float32 differs in the last bit for some values.
    """
    _check_uint8_frames(frames)
    x = (frames.to(torch.float64) * (1 / 255)).to(torch.float32)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std  # division, not multiplication by 1/std: that is what numpy did


def patchify(pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """float32 (T, 3, h, w) -> (rows (gt*gh*gw, 1176), grid_thw (gt, gh, gw)) (docs/numerics.md, Pixels and patches).

    Rows run over (t, block-row, block-col, mh, mw), so each 2x2 merge block is four consecutive
    rows; inside a row, values run over (channel, frame in pair, pixel row, pixel column).
    """
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"patchify needs (T, 3, h, w) pixels, got shape {tuple(pixels.shape)}")
    t, c, h, w = pixels.shape
    if t == 0 or t % TEMPORAL_PATCH_SIZE:
        raise ValueError(
            f"patchify needs an even number of frames, got {t}; sample an even count (--num-frames)"
        )
    if h % IMAGE_FACTOR or w % IMAGE_FACTOR or h == 0 or w == 0:
        raise ValueError(
            f"patchify needs h and w to be positive multiples of {IMAGE_FACTOR}, got {h}x{w}; "
            "resize with smart_resize first"
        )
    gt, gh, gw = t // TEMPORAL_PATCH_SIZE, h // PATCH_SIZE, w // PATCH_SIZE
    bh, bw = gh // MERGE_SIZE, gw // MERGE_SIZE
    x = pixels.reshape(gt, TEMPORAL_PATCH_SIZE, c, bh, MERGE_SIZE, PATCH_SIZE, bw, MERGE_SIZE, PATCH_SIZE)
    # x: (gt, tau, c, bh, mh, i, bw, mw, j)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (gt, bh, bw, mh, mw, c, tau, i, j)
    rows = x.reshape(gt * gh * gw, c * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE)
    return rows, (gt, gh, gw)


@dataclass
class VideoPixels:
    """One video ready for the Qwen2-VL vision tower."""

    pixel_values: torch.Tensor  # float32 (gt*gh*gw, 1176)
    grid_thw: tuple[int, int, int]  # (gt, gh, gw)

    @property
    def num_tokens(self) -> int:
        """Number of <|video_pad|> tokens: one per 2x2 merge block."""
        gt, gh, gw = self.grid_thw
        return gt * gh * gw // (MERGE_SIZE * MERGE_SIZE)


def preprocess_frames(
    frames: torch.Tensor,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_pixels: int = VIDEO_MIN_PIXELS,
) -> VideoPixels:
    """uint8 (T, 3, H, W) sampled frames -> `VideoPixels` (docs/numerics.md, Resize and Pixels and patches)."""
    _check_uint8_frames(frames)
    h, w = smart_resize(frames.shape[-2], frames.shape[-1], IMAGE_FACTOR, min_pixels, max_pixels)
    resized = resize_frames(frames, h, w)  # uint8 (T, 3, h, w)
    pixels = normalize_frames(resized)  # float32 (T, 3, h, w)
    rows, grid = patchify(pixels)  # float32 (gt*gh*gw, 1176)
    return VideoPixels(pixel_values=rows, grid_thw=grid)


def _check_uint8_frames(frames: torch.Tensor) -> None:
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
        got = frames.dtype if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a uint8 torch tensor (T, 3, H, W), got {got}")
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (T, 3, H, W), got {tuple(frames.shape)}")
