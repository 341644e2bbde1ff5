"""`videoalign guide` (Flow-NRG, docs/numerics.md, Flow-NRG) end to end through the CLI on recipes/debug/guide.yaml and a
tiny-random Wan, with a hand-set latent reward model whose heads read the means of latent channels 0 and 1 (as in
tests/test_guidance.py), saved to disk the way train-latent-rm saves one. Also `bench speed guide` on tiny."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from videoalign.gen.families import TINY_RANDOM
from videoalign.gen.generator import load_generator
from videoalign.gen.latent_reward import LatentRewardConfig, build_latent_reward, save_latent_reward

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "debug" / "guide.yaml"
PROMPTS = ["a red fox in the snow", "a boat at sea", "a city at night"]


@pytest.fixture(scope="module")
def latent_rm(tmp_path_factory, make_channel_reward) -> Path:
    """r_CH0 = mean of latent channel 0, r_CH1 = of channel 1 (tests/conftest.py), saved as train-latent-rm does."""
    gen = load_generator(TINY_RANDOM, "float32")
    return save_latent_reward(make_channel_reward(gen.transformer), None, tmp_path_factory.mktemp("latent_rm") / "rm")


@pytest.fixture(scope="module")
def prompts_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.csv"
    path.write_text("prompt,prompt_zh\n" + "".join(f'"{p}",x\n' for p in PROMPTS), encoding="utf-8")
    return path


def _guide(cli, out, *args, ok=True):
    result = cli.invoke("guide", "--recipe", RECIPE, "--output-dir", out, *args)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "guide.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run_a(cli, latent_rm, prompts_csv, tmp_path_factory) -> Path:
    """3 prompts, W = 4, weights 1:0 (channel 0), --compare."""
    out = tmp_path_factory.mktemp("guide") / "a"
    _guide(cli, out, "--latent-rm", latent_rm, "--prompts", prompts_csv, "--weights", "1:0", "--compare")
    return out


def test_end_to_end_and_resume(cli, run_a, latent_rm, prompts_csv):
    lines = _lines(run_a)
    assert [r["index"] for r in lines] == [0, 1, 2] and [r["prompt"] for r in lines] == PROMPTS
    assert [r["seed"] for r in lines] == [0, 1, 2]
    for r in lines:
        name = f"{r['index']:05d}"
        for f in (f"{name}.mp4", f"{name}-compare.mp4", f"{name}-unguided.mp4", f"{name}-strip.png"):
            assert (run_a / f).stat().st_size > 0, f
        assert r["video"] == f"{name}.mp4" and r["weights"] == {"CH0": 1.0, "CH1": 0.0} and r["scale"] == 4.0
        assert len(r["trajectory"]) == 4 and r["trajectory"][0]["t"] == 1.0
        assert set(r["trajectory"][1]) >= {"t", "weighted", "rewards"} and set(r["trajectory"][1]["rewards"]) == {
            "CH0", "CH1"}
        # guided beats unguided from the same seed
        assert r["final_reward"]["weighted"] > r["compare"]["final_reward"]["weighted"]
    from videoalign.video import read_video

    side = read_video(run_a / "00000-compare.mp4", num_frames=9).frames  # (T, 3, H, W): guided | unguided
    assert tuple(side.shape[-2:]) == (32, 64)
    assert not (run_a / "guide.jsonl.parts").exists() and (run_a / "guide.config.yaml").is_file()
    # rerun: nothing new, no duplicates
    before = (run_a / "guide.jsonl").read_text()
    mtime = (run_a / "00001.mp4").stat().st_mtime_ns
    result = _guide(cli, run_a, "--latent-rm", latent_rm, "--prompts", prompts_csv, "--weights", "1:0", "--compare")
    assert "3 already done, 0 to sample" in result.output
    assert (run_a / "guide.jsonl").read_text() == before and (run_a / "00001.mp4").stat().st_mtime_ns == mtime
    # an interrupted run: drop the last line and its video; the rerun samples only that one, identically
    (run_a / "guide.jsonl").write_text("".join(x + "\n" for x in before.splitlines()[:2]))
    (run_a / "00002.mp4").unlink()
    result = _guide(cli, run_a, "--latent-rm", latent_rm, "--prompts", prompts_csv, "--weights", "1:0", "--compare")
    assert "2 already done, 1 to sample" in result.output
    assert _lines(run_a) == [json.loads(x) for x in before.splitlines()]
    # other settings into the same folder are refused
    result = _guide(cli, run_a, "--latent-rm", latent_rm, "--prompts", prompts_csv, "--weights", "1:0", "--scale", "2",
                    ok=False)
    assert result.exit_code == 2 and "other settings" in result.output and "scale: 4.0 -> 2.0" in result.output


def test_scale_zero_is_the_plain_sampler_and_reward_rises_with_scale(cli, run_a, latent_rm, prompts_csv, tmp_path):
    """W = 0 gives bit-identical latents (and video bytes) to --compare's unguided sample; the final channel-0
    reward rises with W = 0 < 2 < 8 for every prompt."""
    finals = {4.0: [r["final_reward"]["weighted"] for r in _lines(run_a)]}
    for scale in (0, 2, 8):
        out = tmp_path / f"w{scale}"
        _guide(cli, out, "--latent-rm", latent_rm, "--prompts", prompts_csv, "--weights", "1:0", "--scale", scale)
        lines = _lines(out)
        finals[float(scale)] = [r["final_reward"]["weighted"] for r in lines]
        if scale == 0:
            for r, a in zip(lines, _lines(run_a)):
                assert r["latents_sha1"] == a["compare"]["latents_sha1"]
                assert r["final_reward"] == a["compare"]["final_reward"]
                assert (out / r["video"]).read_bytes() == (run_a / a["compare"]["video"]).read_bytes()
                assert all(s["grad_rms"] == 0.0 for s in r["trajectory"])
    for i in range(len(PROMPTS)):
        column = [finals[w][i] for w in (0.0, 2.0, 4.0, 8.0)]
        assert column == sorted(column) and len(set(column)) == 4, finals
    print("final CH0 reward vs W:", {w: [round(v, 4) for v in f] for w, f in sorted(finals.items())})


def test_weights_select_the_dimension(cli, run_a, latent_rm, tmp_path):
    moved = {}
    plain = _lines(run_a)[0]["compare"]["final_reward"]["rewards"]
    for weights in ("1:0", "0:1"):
        out = tmp_path / weights.replace(":", "_")
        _guide(cli, out, "--latent-rm", latent_rm, "--prompt", PROMPTS[0], "--weights", weights, "--scale", 8)
        rewards = _lines(out)[0]["final_reward"]["rewards"]
        moved[weights] = {d: rewards[d] - plain[d] for d in rewards}
    assert moved["1:0"]["CH0"] > abs(moved["1:0"]["CH1"]) and moved["0:1"]["CH1"] > abs(moved["0:1"]["CH0"]), moved


@pytest.mark.multiprocess
def test_two_processes_equal_one(cli, run_a, latent_rm, prompts_csv, tmp_path):
    out = tmp_path / "two"
    cmd = ["accelerate", "launch", "--num_processes", "2", "--cpu", "-m", "videoalign", "guide", "--recipe",
           str(RECIPE), "--latent-rm", str(latent_rm), "--prompts", str(prompts_csv), "--weights", "1:0", "--compare",
           "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=cli.env(), capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on 2 process(es)" in proc.stdout + proc.stderr
    one, two = _lines(run_a), _lines(out)
    assert [r["index"] for r in two] == [0, 1, 2]
    for a, b in zip(one, two):
        assert (a["prompt"], a["seed"], a["video"]) == (b["prompt"], b["seed"], b["video"])
        assert b["final_reward"]["weighted"] == pytest.approx(a["final_reward"]["weighted"], abs=1e-5)
        assert [s["weighted"] for s in b["trajectory"]] == pytest.approx([s["weighted"] for s in a["trajectory"]],
                                                                         abs=1e-5)


def _other_text_rm(path: Path) -> Path:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                                        in_channels=16, out_channels=16, text_dim=16, freq_dim=32, ffn_dim=64,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    return save_latent_reward(build_latent_reward(transformer, LatentRewardConfig(k=1)), None, path)


def test_bad_input_fails_at_once(cli, latent_rm, tmp_path):
    cases = [
        (["--latent-rm", latent_rm, "--weights", "1:1:1"], ["weights", "CH0:CH1"]),
        (["--latent-rm", latent_rm, "--scale", "-1"], ["scale must be", ">= 0"]),
        (["--latent-rm", _other_text_rm(tmp_path / "rm16")], ["text width: expected 16, got 32"]),
        (["--latent-rm", latent_rm, "--prompts", tmp_path / "missing.csv"], ["missing.csv", "no such file"]),
        (["--scale", "2"], ["latent_rm is required"]),
    ]
    for args, needles in cases:
        out = tmp_path / "out"
        extra = [] if "--prompts" in args else ["--prompt", "a cat"]
        result = _guide(cli, out, *extra, *args, ok=False)
        assert result.exit_code == 2, result.output
        assert cli.error_lines(result.output), result.output
        for needle in needles:
            assert needle in result.output, (needle, result.output)
        assert not list(out.glob("*.mp4"))


def test_eval_prompts_with_limit(cli, latent_rm, shared_data, tmp_path):
    source = shared_data / "eval_prompts" / "TA_hard.csv"
    out = tmp_path / "ta_hard"
    _guide(cli, out, "--latent-rm", latent_rm, "--prompts", source, "--limit", 1, "--steps", 2)
    lines = _lines(out)
    assert len(lines) == 1 and lines[0]["prompt"].startswith("A cat and a dog baking a cake")
