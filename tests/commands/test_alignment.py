"""It aligns: a toy preference on the tiny Wan, trained through the real CLI, moves samples toward the chosen side.

The toy: 16 pairs whose latents differ in one measurable property, the mean of latent channel 0 (+1 for chosen,
-1 for rejected, on shared N(0, 0.5^2) content). The tiny random VAE is nearly blind to pixel content (its
latents of a bright and a dark clip differ by ~1 % of their spread), so the property is placed in the latents:
the test writes them into the latent cache for the pair file's clips, which the commands then read as usual.

1. The base model: the tiny Wan fine-tuned on both sides equally (`rwr --weighting uniform`, a mixture, so its
   samples have channel-0 mean ~0), exported with --merge as a diffusers pipeline folder.
2. dpo, rwr (exp weights) and the SFT baseline each start from that base; samples drawn with the base model's
   seeds must move channel 0 toward the chosen side (+1), measured against the base.
3. --beta-schedule timestep vs constant beta: beta (1 - t)^2 vanishes at high noise, so the policy drifts
   further from the reference there (the paper's reward-hacking analysis, Table 3).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from videoalign.flow import add_noise
from videoalign.gen.generator import load_generator
from videoalign.gen.latent_cache import CacheSpec, LatentCache
from videoalign.gen.lora import load_lora

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["a red ball rolling on grass", "a cat walking in the snow", "waves on a beach", "a city at night"]
PAIRS, SHAPE, SEEDS = 16, (16, 3, 4, 4), list(range(16))
#: enough capacity to learn the toy in tens of steps: LoRA on attention, FFN and the output projection
TRAIN = ["--set", "lora.targets=[to_q,to_k,to_v,to_out.0,ffn.net.0.proj,ffn.net.2,proj_out]", "--set", "lora.rank=8",
         "--batch-size", "4", "--grad-accum", "1", "--lr", "1e-2", "--set", "save_every=0",
         "--set", "validate_every=0", "--set", "validation_prompts=[]"]


def _toy_latents(cache_dir: Path, model: str, clips: Path) -> None:
    spec = CacheSpec(model, 9, 32, 32, None, "crop", 32)
    cache = LatentCache(cache_dir, spec)
    g = torch.Generator().manual_seed(0)
    for i in range(PAIRS):
        content = 0.5 * torch.randn(SHAPE, generator=g)
        for side, sign in (("chosen", 1.0), ("rejected", -1.0)):
            z = content.clone()
            z[0] += sign
            cache.put_video(clips / f"t{i}_{side}.mp4", z)


def _train(cli, cmd: str, toy: dict, out: Path, model: str, *args) -> Path:
    recipe = REPO / "recipes" / "debug" / f"{cmd}.yaml"
    result = cli.invoke(cmd, "--recipe", recipe, "--data", toy["pairs"], "--output-dir", out, "--model", model,
                        "--set", f"cache_dir={toy['cache']}", *TRAIN, *args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def toy(cli, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("toy")
    lines = []
    for i in range(PAIRS):
        for side in ("chosen", "rejected"):
            cli.make_clip(root / "clips" / f"t{i}_{side}.mp4", seed=i, height=32, width=32, frames=9)
        lines.append({"prompt": PROMPTS[i % 4], "chosen": f"clips/t{i}_chosen.mp4",
                      "rejected": f"clips/t{i}_rejected.mp4",
                      "scores": {"chosen": {"VQ": 1.0, "MQ": 1.0, "TA": 1.0},
                                 "rejected": {"VQ": -1.0, "MQ": -1.0, "TA": -1.0}}})
    (root / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    toy = {"root": root, "pairs": root / "pairs.jsonl", "cache": root / "cache"}
    _toy_latents(toy["cache"], "tiny-random", root / "clips")
    pre = _train(cli, "rwr", toy, root / "pretrain", "tiny-random", "--weighting", "uniform", "--merge",
                 "--max-steps", "60")
    toy["base"] = str(pre / "merged")
    _toy_latents(toy["cache"], toy["base"], root / "clips")
    toy["base_samples"] = _samples(toy["base"])
    return toy


def _samples(model: str, lora: Path | None = None) -> torch.Tensor:
    """(16, C, F', H', W') latents from the base model's seeds, one per prompt (cycled), 10 Euler steps."""
    gen = load_generator(model, "float32")
    if lora is not None:
        load_lora(gen, lora)
    text = gen.pad_text(gen.encode_prompts([PROMPTS[i % 4] for i in SEEDS]))
    return gen.sample(text, SEEDS, SHAPE, steps=10, guidance_scale=1.0)


def _channel0(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0].mean(dim=(1, 2, 3))


def _assert_moves_toward_chosen(toy: dict, out: Path, label: str) -> dict:
    base, aligned = _channel0(toy["base_samples"]), _channel0(_samples(toy["base"], out / "final"))
    figures = {"method": label, "base": base.mean().item(), "aligned": aligned.mean().item(),
               "share_of_seeds_moved_up": (aligned > base).float().mean().item()}
    print(json.dumps(figures))
    assert abs(figures["base"]) < 0.3  # the base samples the mixture
    assert figures["aligned"] > figures["base"] + 0.3
    assert figures["share_of_seeds_moved_up"] >= 0.8
    return figures


def test_dpo_moves_samples_toward_chosen(cli, toy):
    out = _train(cli, "dpo", toy, toy["root"] / "dpo", toy["base"], "--beta", "100", "--max-steps", "30")
    _assert_moves_toward_chosen(toy, out, "dpo")


def test_rwr_moves_samples_toward_chosen(cli, toy):
    out = _train(cli, "rwr", toy, toy["root"] / "rwr", toy["base"], "--weighting", "exp", "--max-steps", "30")
    _assert_moves_toward_chosen(toy, out, "rwr")


def test_sft_baseline_moves_samples_toward_chosen(cli, toy):
    out = _train(cli, "rwr", toy, toy["root"] / "sft", toy["base"], "--weighting", "uniform", "--chosen-only",
                 "--max-steps", "30")
    _assert_moves_toward_chosen(toy, out, "sft")


def _drift(toy: dict, lora: Path, t: float) -> float:
    """mean ||v_policy - v_reference||^2 over the 32 toy clips noised to time t (fixed noise)."""
    gen = load_generator(toy["base"], "float32")
    cache = LatentCache(toy["cache"], CacheSpec(toy["base"], 9, 32, 32, None, "crop", 32))
    clips = toy["root"] / "clips"
    x0 = torch.stack([cache.load_video(clips / f"t{i}_{s}.mp4") for i in range(PAIRS) for s in ("chosen", "rejected")])
    text = gen.pad_text(gen.encode_prompts([PROMPTS[i % 4] for i in range(PAIRS) for _ in range(2)]))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(123))
    times = torch.full((len(x0),), t)
    x_t = add_noise(x0, noise, times)
    with torch.no_grad():
        reference = gen.velocity(x_t, times, text)
        load_lora(gen, lora)
        return (gen.velocity(x_t, times, text) - reference).pow(2).mean().item()


def test_timestep_beta_drifts_further_at_high_noise(cli, toy):
    runs = {}
    for schedule in ("constant", "timestep"):
        runs[schedule] = _train(cli, "dpo", toy, toy["root"] / f"beta_{schedule}", toy["base"], "--beta", "100",
                                "--beta-schedule", schedule, "--max-steps", "30") / "final"
    drift = {s: {t: _drift(toy, lora, t) for t in (0.1, 0.9)} for s, lora in runs.items()}
    print(json.dumps({"drift": drift}))
    assert drift["timestep"][0.9] > 3 * drift["constant"][0.9]
    # relative to its own low-noise drift, too: beta_t leaves high noise unregularised
    assert drift["timestep"][0.9] / drift["timestep"][0.1] > drift["constant"][0.9] / drift["constant"][0.1]
