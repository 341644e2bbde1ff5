"""videoalign.gen.latent_cache: frame fitting, and the cache invariants (ARCHITECTURE.md rule 10): cached latents equal
on-the-fly encoding exactly, each unique video and prompt is encoded once, a re-run encodes nothing, another spec
gets other entries, a broken clip is recorded and skipped, and sharding over processes covers everything once.
Videos are real mp4s (9 frames, 32 x 32, 8 fps) written with videoalign.video.write_video; the model is the
tiny-random Wan."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from videoalign.gen.families import TINY_RANDOM
from videoalign.gen.generator import load_generator
from videoalign.gen.latent_cache import CacheSpec, LatentCache, OnTheFlyLatents, fit_frames
from videoalign.video import VideoError, read_clip, write_video

SPEC = CacheSpec(model=TINY_RANDOM, num_frames=9, height=32, width=32, fps=None, resize="crop", text_max_length=32)
PROMPTS = ["a red fox", "a cat on a sofa", "a bird"]


class CountingGenerator:
    """Delegates to a Generator and records what build() asks it to encode."""

    def __init__(self, gen):
        self.gen, self.videos, self.prompts = gen, 0, []

    def encode_video(self, frames):
        self.videos += 1
        return self.gen.encode_video(frames)

    def encode_prompts(self, prompts):
        self.prompts.extend(prompts)
        return self.gen.encode_prompts(prompts)


@pytest.fixture(scope="module")
def gen():
    return load_generator(TINY_RANDOM, "float32")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Three different 9-frame 32 x 32 clips at 8 fps (seeded noise over a moving gradient)."""
    root = tmp_path_factory.mktemp("clips")
    out = []
    for i in range(3):
        rng = torch.Generator().manual_seed(i)
        ramp = torch.linspace(0, 180, 32).view(1, 32, 1, 1) + 8 * torch.arange(9).view(9, 1, 1, 1)
        frames = (ramp.expand(9, 32, 32, 3) + 60 * torch.rand(9, 32, 32, 3, generator=rng)).clamp(0, 255)
        out.append(write_video(root / f"clip{i}.mp4", frames.to(torch.uint8), fps=8))
    return out


# -- fit_frames ---------------------------------------------------------------------------------------------

def _bands(h: int, w: int) -> torch.Tensor:
    """uint8 (2, h, w, 3): three vertical bands, red | green | blue, each w/3 wide."""
    frames = torch.zeros(2, h, w, 3, dtype=torch.uint8)
    third = w // 3
    for i in range(3):
        frames[:, :, i * third:(i + 1) * third, i] = 255
    return frames


def test_fit_frames_crop_keeps_the_centre():
    """48 wide -> 32: scale max(32/32, 32/48) = 1, no resize, columns (48 - 32) // 2 = 8 .. 40 exactly.
    96 tall -> 32: rows 32 .. 64. 64 x 96 -> 32 x 32: scale 0.5 -> 32 x 48 (bands 16 wide), crop columns 8 .. 40:
    8 red, 16 green, 8 blue, so the middle is green and the edges are red and blue."""
    wide = torch.randint(0, 256, (2, 32, 48, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fit_frames(wide, 32, 32, "crop"), wide[:, :, 8:40])
    tall = torch.randint(0, 256, (2, 96, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fit_frames(tall, 32, 32, "crop"), tall[:, 32:64])

    out = fit_frames(_bands(64, 96), 32, 32, "crop")
    assert out.shape == (2, 32, 32, 3) and out.dtype == torch.uint8
    assert out[:, :, 12:20].tolist() == torch.tensor([0, 255, 0], dtype=torch.uint8).expand(2, 32, 8, 3).tolist()
    assert out[:, :, 0].float().mean(dim=(0, 1)).argmax().item() == 0  # red at the left edge
    assert out[:, :, -1].float().mean(dim=(0, 1)).argmax().item() == 2  # blue at the right edge


def test_fit_frames_stretch_and_identity():
    """stretch: 64 x 96 -> 32 x 32, all three bands kept (bilinear + antialias, rounded); a frame already at the
    size is returned unchanged by both modes."""
    frames = _bands(64, 96)
    out = fit_frames(frames, 32, 32, "stretch")
    assert out.shape == (2, 32, 32, 3)
    want = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(32, 32), mode="bilinear", antialias=True,
                         align_corners=False).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(out, want)
    assert [out[0, 16, c].float().argmax().item() for c in (2, 16, 29)] == [0, 1, 2]
    same = torch.randint(0, 256, (3, 32, 48, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(fit_frames(same, 32, 48, "crop"), same)
    assert torch.equal(fit_frames(same, 32, 48, "stretch"), same)


# -- read_clip ----------------------------------------------------------------------------------------------

def test_read_clip_frames_and_too_short_error(clips):
    """fps None: the first num_frames consecutive frames (9 of 9). fps 4 on an 8 fps clip: every 2nd source frame,
    0, 2, 4, 6, 8 for 5 frames. 13 frames of a 9-frame clip, or 9 frames at 4 fps (needs source frame 16), are
    too short: VideoError naming the file."""
    full = read_clip(clips[0], 9)
    assert full.shape == (9, 32, 32, 3) and full.dtype == torch.uint8
    assert torch.equal(read_clip(clips[0], 5, fps=4.0), full[::2])
    with pytest.raises(VideoError, match=r"clip0\.mp4: has 9 frames at 8 fps, too few for 13 frames"):
        read_clip(clips[0], 13)
    with pytest.raises(VideoError, match=r"clip0\.mp4.*too few for 9 frames at 4 fps"):
        read_clip(clips[0], 9, fps=4.0)


# -- build --------------------------------------------------------------------------------------------------

def test_build_encodes_each_item_once_and_matches_on_the_fly(tmp_path, gen, clips):
    """Videos listed twice (once through a "sub/.." spelling) and a repeated prompt are encoded once each:
    3 videos, 3 prompts. Each entry equals gen.encode_video(fit_frames(read_clip(...))) exactly, and what
    OnTheFlyLatents computes; each prompt entry equals encode_prompts on its own. A re-run encodes nothing."""
    spy = CountingGenerator(gen)
    cache = LatentCache(tmp_path / "cache", SPEC)
    (clips[1].parent / "sub").mkdir(exist_ok=True)
    videos = [clips[0], clips[1], clips[0], clips[1].parent / "sub" / ".." / clips[1].name, clips[2]]
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2]]
    assert cache.todo_count(videos, prompts) == 6
    assert cache.build(spy, videos, prompts) == (3, 0)
    assert spy.videos == 3 and sorted(spy.prompts) == sorted(PROMPTS)
    assert cache.todo_count(videos, prompts) == 0
    assert json.loads((cache.root / "spec.json").read_text()) == asdict(SPEC)
    assert cache.errors() == {}

    on_the_fly = OnTheFlyLatents(gen, SPEC)
    for clip in clips:
        cached = cache.load_video(clip)
        direct = gen.encode_video(fit_frames(read_clip(clip, 9, None), 32, 32, "crop"))
        assert cached.shape == (16, 3, 4, 4) and cached.dtype == torch.float32
        assert torch.equal(cached, direct)
        assert torch.equal(cached, on_the_fly.load_video(clip))
    assert not torch.equal(cache.load_video(clips[0]), cache.load_video(clips[1]))
    for prompt in PROMPTS:
        text = cache.load_prompt(prompt)
        (alone,) = gen.encode_prompts([prompt])
        assert text.shape == alone.shape and text.shape[1] == 32
        torch.testing.assert_close(text, alone, rtol=0, atol=1e-6)  # batched vs alone: same up to rounding

    again = CountingGenerator(gen)
    assert cache.build(again, videos, prompts) == (0, 0)
    assert again.videos == 0 and again.prompts == []


def test_another_spec_gets_another_root_and_a_changed_file_is_encoded_again(tmp_path, gen, clips):
    """height 64 instead of 32 -> another spec key, another folder, nothing cached there yet. Rewriting a clip
    changes its size/mtime key, so it counts as missing again."""
    cache = LatentCache(tmp_path / "cache", SPEC)
    copy = write_video(tmp_path / "copy.mp4", read_clip(clips[0], 9), fps=8)
    assert cache.build(gen, [copy], [PROMPTS[0]]) == (1, 0)
    taller = LatentCache(tmp_path / "cache", replace(SPEC, height=64))
    assert taller.root != cache.root and taller.root.parent == cache.root.parent
    assert CacheSpec(**asdict(SPEC)).key == SPEC.key != replace(SPEC, height=64).key
    assert not taller.has_video(copy) and not taller.has_prompt(PROMPTS[0])
    assert taller.todo_count([copy], [PROMPTS[0]]) == 2

    assert cache.has_video(copy)
    write_video(copy, read_clip(clips[1], 9), fps=8)
    assert not cache.has_video(copy)


def test_a_broken_video_is_recorded_and_the_rest_goes_on(tmp_path, gen, clips):
    """garbage.mp4 (random bytes) fails to decode and clip2 is encoded: (1, 1); errors() maps the absolute path to
    a message naming the file. A re-run retries only the failure: (0, 1), nothing encoded. With a 13-frame spec a
    9-frame clip is too short: recorded in that spec's errors with the file named."""
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 8)
    cache = LatentCache(tmp_path / "cache", SPEC)
    spy = CountingGenerator(gen)
    assert cache.build(spy, [garbage, clips[2]], [PROMPTS[0]], num_workers=2) == (1, 1)
    assert spy.videos == 1
    assert cache.has_video(clips[2]) and not cache.has_video(garbage)
    errors = cache.errors()
    assert list(errors) == [str(garbage.resolve())]
    assert errors[str(garbage.resolve())].startswith(f"{garbage.resolve()}: cannot decode video")

    assert cache.build(spy, [garbage, clips[2]], [PROMPTS[0]]) == (0, 1)
    assert spy.videos == 1 and len(cache.errors()) == 1

    longer = LatentCache(tmp_path / "cache", replace(SPEC, num_frames=13))
    assert longer.build(spy, [clips[0]], []) == (0, 1)
    assert spy.videos == 1
    (message,) = longer.errors().values()
    assert message.startswith(f"{clips[0].resolve()}: has 9 frames at 8 fps, too few for 13 frames")


def test_sharded_build_covers_everything_exactly_once(tmp_path, gen, clips):
    """world 2: rank 1 takes sorted videos [1::2] (one of three) and sorted prompts [1::2], rank 0 the rest
    ([0::2], two of three), whichever runs first. Together each item is encoded exactly once, and a single-process
    run afterwards has nothing left."""
    videos, prompts = list(clips), list(PROMPTS)
    order = sorted(str(p.resolve()) for p in videos)
    rank0, rank1 = CountingGenerator(gen), CountingGenerator(gen)
    cache = LatentCache(tmp_path / "cache", SPEC)

    assert cache.build(rank1, videos, prompts, rank=1, world=2) == (1, 0)
    assert [cache.has_video(Path(p)) for p in order] == [False, True, False]
    assert cache.build(rank0, videos, prompts, rank=0, world=2) == (2, 0)
    assert rank0.videos + rank1.videos == 3
    assert sorted(rank0.prompts) == sorted(PROMPTS)[0::2] and rank1.prompts == sorted(PROMPTS)[1::2]
    assert all(cache.has_video(p) for p in videos) and all(cache.has_prompt(p) for p in prompts)
    assert cache.build(CountingGenerator(gen), videos, prompts) == (0, 0)
    assert (cache.root / "spec.json").is_file()  # written by rank 0 only
