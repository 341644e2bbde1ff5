"""Decode, sample and write video files: the only module that imports a codec.

It owns docs/numerics.md, Frames: how many frames the reference samples from a clip
(`sample_frame_count`, fps mode and nframes mode with Python's half-to-even `round`), which
frames (`frame_indices`, float32 `torch.linspace` + `torch.round`), and decoding exactly those
frames with decord 0.6.0 as uint8 RGB (`read_video`). Decord is kept for parity: other decoders
can differ in YUV->RGB conversion and in frame-index mapping.

`write_video` (imageio-ffmpeg, H.264) exists so tests and generators can write clips; it is not
on the scoring path.

Resizing and pixel normalisation live in `vision.py`.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# docs/numerics.md, Frames constants (the reference's vendored `vision_process.py`).
FRAME_FACTOR = 2
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768
DEFAULT_FPS = 2.0


class VideoError(ValueError):
    """A video cannot be used; the one-line message names the file and how to fix it."""


def _ceil2(x: float) -> int:
    return math.ceil(x / FRAME_FACTOR) * FRAME_FACTOR


def _floor2(x: float) -> int:
    return math.floor(x / FRAME_FACTOR) * FRAME_FACTOR


def _round2(x: float) -> int:
    # Python's round is half to even: round(10.5) == 10, round(11.5) == 12. This is what the
    # reference uses, and why 21 -> 20 but 23 -> 24 (docs/numerics.md, Frames).
    return round(x / FRAME_FACTOR) * FRAME_FACTOR


def sample_frame_count(
    total_frames: int,
    src_fps: float,
    fps: float | None = DEFAULT_FPS,
    num_frames: int | None = None,
) -> int:
    """Number of frames the reference samples from a clip (docs/numerics.md, Frames).

    fps mode (default, the released setting): ``n = total / src_fps * fps`` in float64, clamped to
    ``[ceil2(4), floor2(min(768, total))]`` and rounded to even with Python's ``round``.
    nframes mode (``num_frames`` given): ``n = round2(num_frames)`` with no clamp.
    In both modes ``n > total`` becomes ``n = total`` (which may be odd; `read_video` rejects an
    odd count because patchify needs pairs of frames).

    ``fps`` and ``num_frames`` are mutually exclusive. Because ``fps`` defaults to 2.0, passing
    ``num_frames`` with ``fps`` left at the default (or None) selects nframes mode; any other fps
    together with ``num_frames`` is an error. Both None means fps mode at 2.0.

    Raises ValueError when the result is not in ``2 <= n <= total`` or an argument is invalid.
    """
    if isinstance(total_frames, bool) or int(total_frames) != total_frames or total_frames < 1:
        raise ValueError(f"total_frames must be a positive integer, got {total_frames!r}")
    total_frames = int(total_frames)
    if num_frames is not None:
        if fps is not None and fps != DEFAULT_FPS:
            raise ValueError(f"fps={fps} and num_frames={num_frames} are mutually exclusive: pass only one")
        if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
        n = _round2(num_frames)
    else:
        if fps is None:
            fps = DEFAULT_FPS
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive finite number, got {fps!r}")
        if not (math.isfinite(src_fps) and src_fps > 0):
            raise ValueError(f"source fps must be a positive finite number, got {src_fps!r}")
        min_f = _ceil2(FPS_MIN_FRAMES)
        max_f = _floor2(min(FPS_MAX_FRAMES, total_frames))
        n = total_frames / src_fps * fps  # float64, same expression order as the reference
        n = _round2(min(max(n, min_f), max_f))
    n = min(n, total_frames)  # may make n odd; read_video rejects that
    if not (FRAME_FACTOR <= n <= total_frames):
        raise ValueError(
            f"sampled frame count {n} is outside [2, {total_frames}] (total frames); "
            "the clip is too short or num_frames is too small"
        )
    return n


def frame_indices(total_frames: int, n: int) -> list[int]:
    """Indices of the ``n`` sampled frames (docs/numerics.md, Frames).

    Uses torch's default-dtype (float32) linspace and ``torch.round`` (half to even) on purpose:
    a float64 re-derivation differs on exact ``.5`` cases.
    """
    if n < 1 or total_frames < 1:
        raise ValueError(f"need n >= 1 and total_frames >= 1, got n={n}, total={total_frames}")
    idx = torch.round(torch.linspace(0, total_frames - 1, n, dtype=torch.float32))
    return [int(i) for i in idx.long().tolist()]


@dataclass
class VideoFrames:
    """The sampled frames of one clip, as the reference feeds them to resizing."""

    frames: torch.Tensor  # uint8 (T, 3, H, W), RGB, contiguous
    indices: list[int]  # the T source-frame indices, ascending
    total_frames: int  # len(VideoReader)
    src_fps: float  # VideoReader.get_avg_fps()


def _clean_path(path: str | os.PathLike) -> Path:
    # The reference passes `file://<abs path>` to decord; we accept that spelling but never hand
    # decord a URL. Relative paths are made absolute for the same reason the reference needed it.
    s = os.fspath(path).removeprefix("file://")
    return Path(s).expanduser().absolute()


_STDERR_LOCK = threading.Lock()


@contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 while decord opens a file: its C++ logger prints "ERROR opening: <file>"
    itself for a corrupt file, on top of our one-line VideoError. Held for the open call only (milliseconds),
    under a lock so concurrent decoding threads restore the descriptor correctly."""
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real stderr (e.g. captured by a test runner): nothing to silence
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def _open(p: Path):
    """(VideoReader, total frames, source fps) of an existing file, or VideoError."""
    if not p.is_file():
        raise VideoError(f"{p}: video file not found; check the path (relative to {Path.cwd()})")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: video file is empty (0 bytes); re-export or re-download it")

    import decord  # imported here so that importing videoalign does not load the codec

    try:
        with _quiet_native_stderr():
            vr = decord.VideoReader(str(p), num_threads=1)
        total = len(vr)
        src_fps = float(vr.get_avg_fps())
    except (decord.DECORDError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VideoError(
            f"{p}: cannot decode video ({first[:200]}); check that it is a valid video file, "
            "e.g. re-encode it with ffmpeg to H.264 mp4"
        ) from e
    if total <= 0:
        raise VideoError(f"{p}: video has no frames; re-export or re-download it")
    if not (math.isfinite(src_fps) and src_fps > 0):
        raise VideoError(
            f"{p}: video reports frame rate {src_fps}; re-encode it with a fixed frame rate "
            "(ffmpeg -r 24) or pass --num-frames"
        )
    return vr, total, src_fps


def _get_batch(vr, indices: list[int], p: Path) -> np.ndarray:
    """uint8 (T, H, W, 3) frames at `indices`."""
    import decord

    try:
        batch = vr.get_batch(indices).asnumpy()  # uint8 (T, H, W, 3)
    except (decord.DECORDError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VideoError(
            f"{p}: cannot decode frames {indices[0]}..{indices[-1]} ({first[:200]}); "
            "the file may be truncated, re-encode it with ffmpeg"
        ) from e
    return batch


def read_video(
    path: str | os.PathLike,
    fps: float | None = DEFAULT_FPS,
    num_frames: int | None = None,
) -> VideoFrames:
    """Decode the frames the reference would sample from ``path`` (docs/numerics.md, Frames).

    Only the sampled indices are decoded (decord ``get_batch``), with one decoder thread so the
    result does not depend on the machine. Raises `VideoError` for a missing, unreadable, empty or
    too-short file, a bad frame rate, or an odd sampled frame count.
    """
    p = _clean_path(path)
    vr, total, src_fps = _open(p)
    try:
        n = sample_frame_count(total, src_fps, fps=fps, num_frames=num_frames)
    except ValueError as e:
        raise VideoError(f"{p}: {e} ({total} frames at {src_fps:g} fps)") from e
    if n % FRAME_FACTOR:
        raise VideoError(
            f"{p}: sampling gives an odd frame count {n} ({total} frames at {src_fps:g} fps), "
            f"which cannot be patchified in pairs; pass an even --num-frames <= {total - 1}"
        )

    indices = frame_indices(total, n)
    batch = _get_batch(vr, indices, p)
    frames = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).contiguous()
    return VideoFrames(frames=frames, indices=indices, total_frames=total, src_fps=src_fps)


def read_clip(path: str | os.PathLike, num_frames: int, fps: float | None = None) -> torch.Tensor:
    """The first `num_frames` frames of a clip as uint8 (F, H, W, 3), for a video generator's VAE.

    fps=None takes consecutive frames; otherwise frame i is source frame round(i * src_fps / fps), so a 30 fps
    clip read at 16 fps keeps the motion speed a 16 fps model generates. Too short a clip raises VideoError.
    """
    p = _clean_path(path)
    vr, total, src_fps = _open(p)
    step = 1.0 if fps is None else src_fps / fps
    indices = [min(round(i * step), total - 1) for i in range(num_frames)]
    if round((num_frames - 1) * step) > total - 1:
        at = "" if fps is None else f" at {fps:g} fps"
        raise VideoError(f"{p}: has {total} frames at {src_fps:g} fps, too few for {num_frames} frames{at}; "
                         "lower num_frames (or fps) in the recipe, or drop this video")
    return torch.from_numpy(np.ascontiguousarray(_get_batch(vr, indices, p)))


def write_video(path: str | os.PathLike, frames: torch.Tensor | np.ndarray, fps: float) -> Path:
    """Write uint8 RGB frames, (T, H, W, 3) or (T, 3, H, W), to an H.264 mp4 (yuv420p).

    The file appears atomically: ffmpeg writes a temporary file in the same folder, which is then
    renamed over ``path``, so a crash never leaves a half-written clip under the final name.
    H and W must be even (yuv420p halves the chroma planes). Returns the absolute path.
    """
    import imageio_ffmpeg

    p = _clean_path(path)
    arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise ValueError(
            f"{p}: write_video needs uint8 frames (T, H, W, 3) or (T, 3, H, W), "
            f"got {arr.dtype} {tuple(arr.shape)}; convert with .clamp(0, 255).to(torch.uint8)"
        )
    if arr.shape[-1] != 3 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)  # (T, 3, H, W) -> (T, H, W, 3)
    if arr.shape[-1] != 3:
        raise ValueError(f"{p}: write_video needs 3 RGB channels, got shape {tuple(arr.shape)}")
    t, h, w, _ = arr.shape
    if t < 1:
        raise ValueError(f"{p}: write_video got no frames; pass at least one frame")
    if h % 2 or w % 2:
        raise ValueError(f"{p}: frame size {h}x{w} must be even for yuv420p; crop or pad one pixel")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"{p}: fps must be a positive finite number, got {fps!r}")
    arr = np.ascontiguousarray(arr)

    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=p.suffix or ".mp4")
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(
            tmp,
            (w, h),  # imageio-ffmpeg takes (width, height)
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=9,  # crf 5: near-lossless, still decodable by any H.264 decoder
            macro_block_size=1,  # never let imageio rescale; sizes are checked above
            ffmpeg_log_level="error",
        )
        writer.send(None)  # start ffmpeg
        for frame in arr:
            writer.send(frame)
        writer.close()
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p
