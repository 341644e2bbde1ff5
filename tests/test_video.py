"""Tests for videoalign.video: frame count and indices (docs/numerics.md, Frames), decoding, writing.

The six-clip table of docs/numerics.md, Frames is checked end to end (decode, resize, grid) in
test_vision.py, which decodes every shared clip once; here the table's frame counts are checked
from (total, fps) alone, and only the two cheapest clips are decoded.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from videoalign import video
from videoalign.video import (
    VideoError,
    VideoFrames,
    frame_indices,
    read_video,
    sample_frame_count,
    write_video,
)

# docs/numerics.md, Frames: clip -> (total frames, fps, n, indices). 2_A's indices are elided in the table
# ("0,13,...,130,143"); the full list is the parity file's.
TABLE = {
    "example_1_A.mp4": (126, 24.0, 10, [0, 14, 28, 42, 56, 69, 83, 97, 111, 125]),
    "example_1_B.mp4": (152, 30.0, 10, [0, 17, 34, 50, 67, 84, 101, 117, 134, 151]),
    "example_2_A.mp4": (144, 24.0, 12, [0, 13, 26, 39, 52, 65, 78, 91, 104, 117, 130, 143]),
    "example_2_B.mp4": (128, 24.0, 10, [0, 14, 28, 42, 56, 71, 85, 99, 113, 127]),
    "example_3_A.mp4": (128, 24.0, 10, [0, 14, 28, 42, 56, 71, 85, 99, 113, 127]),
    "example_3_B.mp4": (60, 16.0, 8, [0, 8, 17, 25, 34, 42, 51, 59]),
}


# ---- sample_frame_count (docs/numerics.md, Frames) ---------------------------------------------------------


def test_reference_examples():
    """126/24*2 = 10.5 -> round(5.25) = 5 -> 10; 60/16*2 = 7.5 -> round(3.75) = 4 -> 8.

    PyPI qwen-vl-utils 0.0.14 uses floor2 and gives 6 for the second clip.
    """
    assert sample_frame_count(126, 24.0) == 10
    assert sample_frame_count(60, 16.0) == 8


@pytest.mark.parametrize("name", sorted(TABLE))
def test_table_counts_and_indices(name):
    total, fps, n, indices = TABLE[name]
    assert sample_frame_count(total, fps) == n
    assert frame_indices(total, n) == indices


def test_bankers_rounding():
    """Clamped value exactly 21 -> round(10.5) = 10 -> 20; 23 -> round(11.5) = 12 -> 24.

    Half-up would give 22 and 24.
    """
    assert sample_frame_count(210, 20.0, fps=2.0) == 20  # 210/20*2 = 21.0
    assert sample_frame_count(230, 20.0, fps=2.0) == 24  # 230/20*2 = 23.0


def test_fps_mode_clamps():
    # Below min: 10/30*2 = 0.67 -> max(., 4) = 4.
    assert sample_frame_count(10, 30.0) == 4
    # Above max: 11 frames at 1 fps -> 22 -> min(., floor2(11) = 10) = 10.
    assert sample_frame_count(11, 1.0) == 10
    # FPS_MAX_FRAMES: 2000 frames at 1 fps -> 4000 -> 768.
    assert sample_frame_count(2000, 1.0) == 768
    # A 3-frame clip: min 4 is clamped by floor2(3) = 2.
    assert sample_frame_count(3, 30.0) == 2
    # Other fps: 100 frames at 25 fps, 4 fps -> 16.
    assert sample_frame_count(100, 25.0, fps=4.0) == 16


def test_defaults_equal_fps_2():
    assert sample_frame_count(126, 24.0, fps=None) == sample_frame_count(126, 24.0, fps=2.0) == 10


def test_nframes_mode():
    """n = round2(N), no min/max clamp: 5 -> round(2.5) = 2 -> 4; 7 -> round(3.5) = 4 -> 8."""
    assert sample_frame_count(100, 24.0, num_frames=16) == 16
    assert sample_frame_count(100, 24.0, num_frames=5) == 4
    assert sample_frame_count(100, 24.0, num_frames=7) == 8
    assert sample_frame_count(100, 24.0, fps=None, num_frames=2) == 2  # below the fps-mode min of 4
    assert sample_frame_count(2000, 1.0, num_frames=800) == 800  # above FPS_MAX_FRAMES


def test_n_above_total_is_clamped_to_total():
    assert sample_frame_count(6, 24.0, num_frames=8) == 6
    # round2(9) = 8 > 7 -> 7: odd, which read_video rejects (patchify needs pairs).
    assert sample_frame_count(7, 24.0, num_frames=9) == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"total_frames": 1, "src_fps": 24.0},  # floor2(1) = 0 -> n = 0
        {"total_frames": 0, "src_fps": 24.0},
        {"total_frames": 100, "src_fps": 24.0, "num_frames": 1},  # round(0.5) = 0 -> 0
        {"total_frames": 100, "src_fps": 24.0, "fps": 4.0, "num_frames": 8},  # mutually exclusive
        {"total_frames": 100, "src_fps": float("nan")},
        {"total_frames": 100, "src_fps": 0.0},
        {"total_frames": 100, "src_fps": 24.0, "fps": -1.0},
    ],
)
def test_sample_frame_count_errors(kwargs):
    with pytest.raises(ValueError):
        sample_frame_count(**kwargs)


# ---- frame_indices (docs/numerics.md, Frames) -------------------------------------------------------------


def test_frame_indices_half_to_even():
    """linspace(0, 5, 3) = [0, 2.5, 5]: torch.round gives 2 (half-up would give 3)."""
    assert frame_indices(6, 3) == [0, 2, 5]
    assert frame_indices(4, 3) == [0, 2, 3]  # 1.5 -> 2
    assert frame_indices(10, 10) == list(range(10))


# ---- read_video on shared clips -----------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_3b(shared_data):
    return read_video(shared_data / "videoalign_examples" / "videos" / "example_3_B.mp4")


def test_read_video_3b_at_2fps(clip_3b):
    """example_3_B: 60 frames at 16 fps -> 8 frames at fps 2 (docs/numerics.md, Frames)."""
    assert isinstance(clip_3b, VideoFrames)
    assert clip_3b.total_frames == 60
    assert clip_3b.src_fps == 16.0
    assert clip_3b.indices == TABLE["example_3_B.mp4"][3]
    f = clip_3b.frames
    assert f.dtype == torch.uint8 and f.is_contiguous()
    assert tuple(f.shape) == (8, 3, 384, 688)


def test_read_video_num_frames_and_file_url(shared_data, clip_3b):
    path = shared_data / "videoalign_examples" / "videos" / "example_3_B.mp4"
    v = read_video(f"file://{path}", fps=None, num_frames=4)
    assert v.indices == frame_indices(60, 4) == [0, 20, 39, 59]
    # Frame 0 decodes the same whichever other frames are in the batch.
    assert torch.equal(v.frames[0], clip_3b.frames[0])


def test_read_video_2a(shared_data):
    v = read_video(shared_data / "videoalign_examples" / "videos" / "example_2_A.mp4")
    total, fps, n, indices = TABLE["example_2_A.mp4"]
    assert (v.total_frames, v.src_fps, v.indices) == (total, fps, indices)
    assert tuple(v.frames.shape) == (n, 3, 384, 672)


# ---- bad input ----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoError, match="not found") as e:
        read_video(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="cannot decode") as e:
        read_video(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_truncated_file(tmp_path, shared_data):
    data = (shared_data / "videoalign_examples" / "videos" / "example_3_B.mp4").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError) as e:
        read_video(path)
    assert str(path) in str(e.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoError, match="empty") as e:
        read_video(path)
    assert str(path) in str(e.value)


class _FakeReader:
    """Stands in for decord.VideoReader to reach states no real file produces on demand."""

    def __init__(self, n, fps):
        self.n, self.fps = n, fps

    def __len__(self):
        return self.n

    def get_avg_fps(self):
        return self.fps


@pytest.mark.parametrize(
    "n, fps, match",
    [(0, 24.0, "no frames"), (10, float("nan"), "frame rate"), (10, 0.0, "frame rate")],
)
def test_zero_frames_and_bad_fps(tmp_path, monkeypatch, n, fps, match):
    import decord

    path = tmp_path / "fake.mp4"
    path.write_bytes(b"x")
    monkeypatch.setattr(decord, "VideoReader", lambda *a, **k: _FakeReader(n, fps))
    with pytest.raises(VideoError, match=match) as e:
        read_video(path)
    assert str(path) in str(e.value)


def _synthetic(t, h, w):
    """uint8 (t, h, w, 3): smooth gradients that move with t, so H.264 keeps them close."""
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    frames = [
        np.stack([(xx * 4 + i * 8) % 256, (yy * 4) % 256, np.full_like(xx, 40 * i % 256)], -1)
        for i in range(t)
    ]
    return np.stack(frames).astype(np.uint8)


def test_write_read_roundtrip(tmp_path):
    frames = _synthetic(6, 48, 64)
    path = write_video(tmp_path / "clip.mp4", frames, fps=8)
    assert os.listdir(tmp_path) == ["clip.mp4"]  # no temporary file left behind
    v = read_video(path, num_frames=6)
    assert (v.total_frames, v.src_fps, v.indices) == (6, 8.0, list(range(6)))
    assert tuple(v.frames.shape) == (6, 3, 48, 64)
    got = v.frames.permute(0, 2, 3, 1).float()
    assert (got - torch.from_numpy(frames).float()).abs().mean() < 3.0  # near-lossless crf


def test_write_video_channels_first_and_overwrite(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, _synthetic(2, 32, 32), fps=4)
    chw = torch.from_numpy(_synthetic(4, 32, 32)).permute(0, 3, 1, 2)  # (T, 3, H, W)
    write_video(path, chw, fps=4)
    assert read_video(path, num_frames=4).total_frames == 4


def test_write_video_rejects_odd_size_and_float(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", _synthetic(2, 33, 32), fps=4)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", _synthetic(2, 32, 32).astype(np.float32), fps=4)
    assert os.listdir(tmp_path) == []


def test_odd_frame_count_is_rejected(tmp_path):
    """A 3-frame clip with num_frames=4: round2(4) = 4 > 3 -> n = 3, odd -> cannot patchify."""
    path = write_video(tmp_path / "three.mp4", _synthetic(3, 32, 32), fps=4)
    with pytest.raises(VideoError, match="odd frame count 3.*--num-frames") as e:
        read_video(path, num_frames=4)
    assert str(path) in str(e.value)
    assert read_video(path).frames.shape[0] == 2  # fps mode: min(4, floor2(3)) = 2


def test_too_short_clip(tmp_path):
    path = write_video(tmp_path / "one.mp4", _synthetic(1, 32, 32), fps=4)
    with pytest.raises(VideoError, match="too short") as e:
        read_video(path)
    assert str(path) in str(e.value)


def test_module_constants():
    assert (video.FRAME_FACTOR, video.FPS_MIN_FRAMES, video.FPS_MAX_FRAMES) == (2, 4, 768)
    assert math.isclose(video.DEFAULT_FPS, 2.0)
