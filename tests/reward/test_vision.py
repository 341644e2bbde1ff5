"""Tests for videoalign.reward.vision: smart_resize, resize, normalise, patchify (docs/numerics.md, Resize and Pixels and patches).

The parity test reproduces the reference's `pixel_values_videos` for the six shared clips bit for
bit: shape, float64 sum, and sha256 of the float32 tensor's C-contiguous bytes
(``hashlib.sha256(t.numpy().tobytes())``).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from videoalign.reward.vision import (
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    VideoPixels,
    normalize_frames,
    patchify,
    preprocess_frames,
    resize_frames,
    smart_resize,
)
from videoalign.video import read_video

# docs/numerics.md, Frames: clip -> (n, (H, W), (h, w), grid (t, h, w), video tokens).
TABLE = {
    "example_1_A.mp4": (10, (752, 1360), (308, 588), (5, 22, 42), 1155),
    "example_1_B.mp4": (10, (720, 1280), (336, 588), (5, 24, 42), 1260),
    "example_2_A.mp4": (12, (384, 672), (336, 588), (6, 24, 42), 1512),
    "example_2_B.mp4": (10, (768, 1280), (336, 560), (5, 24, 40), 1200),
    "example_3_A.mp4": (10, (768, 1280), (336, 560), (5, 24, 40), 1200),
    "example_3_B.mp4": (8, (384, 688), (308, 588), (4, 22, 42), 924),
}


@pytest.fixture(scope="module")
def reference(shared_data):
    """The reference's per-clip results, keyed by file name."""
    path = shared_data / "videoreward" / "parity" / "reference_scores_full_fp32.json"
    return {r["video"]: r for r in json.loads(path.read_text())["results"]}


@pytest.fixture(scope="module")
def clips(shared_data):
    """Each shared clip decoded and preprocessed once: name -> (VideoFrames, VideoPixels)."""
    out = {}
    for name in TABLE:
        frames = read_video(shared_data / "videoalign_examples" / "videos" / name)
        out[name] = (frames, preprocess_frames(frames.frames))
    return out


# ---- smart_resize (docs/numerics.md, Resize) ---------------------------------------------------------------


def test_smart_resize_boundary_720x1280():
    """sqrt(720*1280/200704) = beta; 720/beta/28 is exactly 12.0 in float64 -> 336, not 308."""
    assert smart_resize(720, 1280) == (336, 588)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_smart_resize_table(name):
    _, (h0, w0), hw, _, _ = TABLE[name]
    assert smart_resize(h0, w0, max_pixels=DEFAULT_MAX_PIXELS) == hw


def test_smart_resize_min_pixels_branch():
    """100x100 -> 112x112 = 12544 < 100352 -> beta = sqrt(10.0352); ceil(316.8/28) = 12 -> 336."""
    assert smart_resize(100, 100) == (336, 336)
    assert 336 * 336 >= VIDEO_MIN_PIXELS


def test_smart_resize_unchanged_inside_bounds():
    # 336*588 = 197568 lies between min and max: only the rounding to 28 applies.
    assert smart_resize(336, 588) == (336, 588)
    assert smart_resize(330, 590) == (336, 588)  # round(11.79) = 12, round(21.07) = 21


def test_smart_resize_aspect_ratio_error():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2010)
    smart_resize(10, 2000)  # exactly 200 is allowed


# ---- resize_frames (docs/numerics.md, Resize) --------------------------------------------------------------


def test_resize_same_size_is_identity():
    f = torch.randint(0, 256, (2, 3, 28, 56), dtype=torch.uint8)
    assert resize_frames(f, 28, 56) is f


def test_resize_semantics():
    g = torch.Generator().manual_seed(0)
    f = torch.randint(0, 256, (2, 3, 40, 60), dtype=torch.uint8, generator=g)
    out = resize_frames(f, 28, 56)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (2, 3, 28, 56)
    expected = torch.nn.functional.interpolate(
        f.float(), size=(28, 56), mode="bicubic", align_corners=False, antialias=True
    )
    assert torch.equal(out, expected.clamp(0, 255).round().to(torch.uint8))
    const = torch.full((2, 3, 40, 60), 77, dtype=torch.uint8)
    assert torch.equal(resize_frames(const, 28, 56), torch.full((2, 3, 28, 56), 77, dtype=torch.uint8))


# ---- normalize_frames (docs/numerics.md, Pixels and patches) ------------------------------------------------------------


def test_normalize_bit_exact_all_values():
    """Every uint8 value in every channel against transformers' numpy arithmetic."""
    k = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous()
    got = normalize_frames(k).numpy()
    x = (k.numpy().astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array(CLIP_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(CLIP_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    want = (x - mean) / std
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_rescale_route_matters():
    """Multiplying by 1/255 in float32 differs in the last bit for 126 of the 256 values.

    (float32 k / 255, a correctly rounded division, happens to agree with the float64 route.)
    """
    k = torch.arange(256, dtype=torch.uint8)
    ref = (k.double() * (1 / 255)).float()
    assert (ref != k.float() * (1 / 255)).sum() == 126
    assert torch.equal(ref, k.float() / 255)


# ---- patchify (docs/numerics.md, Pixels and patches) -------------------------------------------------------------------


def test_patchify_order_against_index_formula():
    t, h, w = 4, 56, 84
    y = torch.arange(t * 3 * h * w, dtype=torch.float32).view(t, 3, h, w)  # every value unique
    rows, grid = patchify(y)
    gt, gh, gw = grid
    assert grid == (2, 4, 6) and tuple(rows.shape) == (gt * gh * gw, 1176)
    r = 0
    for tt in range(gt):
        for bh in range(gh // 2):
            for bw in range(gw // 2):
                for mh in range(2):
                    for mw in range(2):
                        # Row r, value ((c*2 + tau)*14 + i)*14 + j = y[2t+tau, c, 14(2bh+mh)+i, 14(2bw+mw)+j]
                        want = torch.empty(1176)
                        for c in range(3):
                            for tau in range(2):
                                for i in range(14):
                                    v = ((c * 2 + tau) * 14 + i) * 14
                                    hh = 14 * (2 * bh + mh) + i
                                    ww = 14 * (2 * bw + mw)
                                    want[v : v + 14] = y[2 * tt + tau, c, hh, ww : ww + 14]
                        assert torch.equal(rows[r], want), f"row {r}"
                        r += 1
    assert r == rows.shape[0]


def test_patchify_errors():
    with pytest.raises(ValueError, match="even number of frames"):
        patchify(torch.zeros(3, 3, 28, 28))
    with pytest.raises(ValueError, match="multiples of 28"):
        patchify(torch.zeros(2, 3, 28, 42))
    with pytest.raises(ValueError, match=r"\(T, 3, h, w\)"):
        patchify(torch.zeros(2, 1, 28, 28))


def test_video_pixels_num_tokens():
    vp = VideoPixels(pixel_values=torch.zeros(5 * 22 * 42, 1176), grid_thw=(5, 22, 42))
    assert vp.num_tokens == 1155


def test_preprocess_rejects_float_frames():
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames(torch.zeros(2, 3, 28, 28))


def test_preprocess_synthetic():
    f = torch.randint(0, 256, (4, 3, 100, 100), dtype=torch.uint8)
    vp = preprocess_frames(f)
    assert vp.grid_thw == (2, 24, 24) and vp.pixel_values.dtype == torch.float32
    assert tuple(vp.pixel_values.shape) == (2 * 24 * 24, 1176) and vp.num_tokens == 288


# ---- the six shared clips (docs/numerics.md, Frames) and pixel parity --------------------------------------


@pytest.mark.parametrize("name", sorted(TABLE))
def test_table(name, clips, reference):
    n, hw0, hw, grid, tokens = TABLE[name]
    frames, pixels = clips[name]
    assert frames.frames.shape[0] == n and tuple(frames.frames.shape[-2:]) == hw0
    assert frames.indices == reference[name]["frames"]["indices"]
    assert frames.total_frames == reference[name]["frames"]["total_frames"]
    assert frames.src_fps == reference[name]["frames"]["avg_fps"]
    assert smart_resize(*hw0) == hw
    assert pixels.grid_thw == grid and list(grid) == reference[name]["video_grid_thw"]
    assert pixels.num_tokens == tokens


@pytest.mark.parametrize("name", sorted(TABLE))
def test_pixel_parity(name, clips, reference):
    ref = reference[name]
    pv = clips[name][1].pixel_values
    assert pv.dtype == torch.float32 and pv.is_contiguous()
    assert list(pv.shape) == ref["pixel_values_videos_shape"]
    assert pv.sum(dtype=torch.float64).item() == pytest.approx(ref["pixel_values_videos_sum"], rel=1e-12)
    assert hashlib.sha256(pv.numpy().tobytes()).hexdigest() == ref["pixel_values_videos_sha256"]
