"""`videoalign bench winrate` end to end through the CLI on recipes/debug/bench_winrate.yaml: a tiny-random Wan
against a zero-effect LoRA of itself (all ties, win rate exactly 0.5) and against a perturbed copy saved as a
pipeline; resume, refusal of other settings, reuse of existing videos (incl. `guide` output), bad input, and
2 processes == 1 process."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from videoalign.gen.families import TINY_RANDOM, WAN_LORA_TARGETS
from videoalign.gen.generator import load_generator, save_pipeline
from videoalign.gen.lora import add_lora, save_lora

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipes" / "debug" / "bench_winrate.yaml"
PROMPTS = ["a red fox in the snow", "a boat at sea", "a city at night"]
DIMS = ["VQ", "MQ", "TA", "reward"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> SimpleNamespace:
    """Prompt files (.txt with a blank line, .csv with an extra column), a zero-effect LoRA of tiny-random, a
    LoRA with random B (as a bare .safetensors file), a perturbed tiny-random pipeline, and a LoRA made for another
    (narrower) transformer."""
    root = tmp_path_factory.mktemp("winrate_inputs")
    txt = root / "prompts.txt"
    txt.write_text(f"{PROMPTS[0]}\n\n{PROMPTS[1]}\n{PROMPTS[2]}\n", encoding="utf-8")
    csv = root / "prompts.csv"
    csv.write_text("prompt,prompt_zh\n" + "".join(f'"{p}",x\n' for p in PROMPTS), encoding="utf-8")
    gen = load_generator(TINY_RANDOM, "float32")
    add_lora(gen.transformer, rank=2, alpha=4, targets=WAN_LORA_TARGETS)  # B = 0: no effect
    zero_lora = root / "zero_lora"
    zero_lora.mkdir()
    save_lora(gen.transformer, zero_lora)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in gen.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_()
    (root / "random_lora").mkdir()
    lora_file = save_lora(gen.transformer, root / "random_lora")
    gen = load_generator(TINY_RANDOM, "float32")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in gen.transformer.parameters():
            p.mul_(1 + 0.5 * torch.randn_like(p))
    perturbed = save_pipeline(gen, root / "perturbed")
    gen.transformer.save_pretrained(str(root / "full_finetune" / "transformer"))  # as dpo/rwr export final/
    from diffusers import WanTransformer3DModel

    other = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16,
                                  out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
                                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    add_lora(other, rank=2, alpha=4, targets=WAN_LORA_TARGETS)
    other_lora = root / "other_lora"
    other_lora.mkdir()
    save_lora(other, other_lora)
    (root / "other_full" / "transformer").mkdir(parents=True)
    (root / "other_full" / "transformer" / "config.json").write_text(json.dumps(dict(other.config)))
    return SimpleNamespace(txt=txt, csv=csv, zero_lora=zero_lora, lora_file=lora_file, perturbed=perturbed,
                           other_lora=other_lora, full_finetune=root / "full_finetune",
                           other_full=root / "other_full")


def _winrate(cli, out, *args, ok=True):
    result = cli.invoke("bench", "winrate", "--recipe", RECIPE, "--output-dir", out, *args)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _json(out: Path) -> dict:
    return json.loads((out / "winrate.json").read_text())


def _same_figures(a: dict, b: dict) -> bool:
    """Equal counts, and means within float noise (VideoReward's scores move in the last bits with the batch a
    video lands in)."""
    counts = ("wins", "ties", "losses", "n")
    return all({k: a[d][k] for k in counts} == {k: b[d][k] for k in counts}
               and b[d]["mean_aligned"] == pytest.approx(a[d]["mean_aligned"], abs=1e-5)
               and b[d]["mean_base"] == pytest.approx(a[d]["mean_base"], abs=1e-5) for d in DIMS)


def _mp4s(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.glob("*.mp4"))}


@pytest.fixture(scope="module")
def run_ties(cli, inputs, tmp_path_factory) -> SimpleNamespace:
    """tiny-random against a zero-effect LoRA of itself, 3 prompts from a .txt, 1 video each."""
    out = tmp_path_factory.mktemp("winrate") / "ties"
    result = _winrate(cli, out, "--aligned", inputs.zero_lora, "--prompts", inputs.txt)
    return SimpleNamespace(out=out, output=result.output, report=_json(out))


@pytest.fixture(scope="module")
def run_diff(cli, inputs, tmp_path_factory) -> SimpleNamespace:
    """tiny-random against a perturbed pipeline, 2 prompts x 2 videos."""
    out = tmp_path_factory.mktemp("winrate") / "diff"
    args = ("--aligned", inputs.perturbed, "--prompts", inputs.csv, "--limit", 2, "--videos-per-prompt", 2)
    result = _winrate(cli, out, *args)
    return SimpleNamespace(out=out, args=args, output=result.output, report=_json(out))


def test_identical_models_tie_everywhere(run_ties):
    report, out = run_ties.report, run_ties.out
    for dim in DIMS:
        f = report["figures"][dim]
        assert (f["wins"], f["ties"], f["losses"], f["n"]) == (0, 3, 0, 3), (dim, f)
        assert f["win_rate"] == 0.5 and f["tie"] == 1.0
    assert [(p["index"], p["video"], p["prompt"], p["seed"]) for p in report["pairs"]] == [
        (i, 0, p, i) for i, p in enumerate(PROMPTS)]  # the blank line of the .txt is skipped
    assert all(p["identical"] for p in report["pairs"])
    assert _mp4s(out / "videos" / "base") == _mp4s(out / "videos" / "aligned")  # same seeds, same sampler
    assert sorted(_mp4s(out / "videos" / "base")) == ["00000.mp4", "00001.mp4", "00002.mp4"]
    assert (out / "winrate.png").stat().st_size > 0 and (out / "winrate.config.yaml").is_file()
    md = (out / "winrate.md").read_text()
    assert "| VQ | 50.00 | 0 | 3 | 0 | 3 |" in md and "| reward | 50.00 |" in md
    assert report["settings"]["steps"] == 2 and report["settings"]["reward"]["model"] == "tiny-random"
    assert {"torch", "diffusers", "videoalign"} <= set(report["versions"])
    assert "win rates against the base" in run_ties.output and not (out / "scores.jsonl.parts").exists()


def test_different_model_gives_sensible_figures(run_diff, cli):
    report, out = run_diff.report, run_diff.out
    assert sorted(_mp4s(out / "videos" / "aligned")) == ["00000-00.mp4", "00000-01.mp4", "00001-00.mp4",
                                                        "00001-01.mp4"]
    assert [p["seed"] for p in report["pairs"]] == [0, 1, 2, 3]
    assert not any(p["identical"] for p in report["pairs"])
    # the figures recomputed from the score cache by hand
    scores = {r["path"]: r for r in cli.read_jsonl(out / "scores.jsonl")}
    for dim in DIMS:
        f = report["figures"][dim]
        assert f["wins"] + f["ties"] + f["losses"] == f["n"] == 4
        assert all(0.0 <= f[k] <= 1.0 for k in ("win", "tie", "loss", "win_rate"))
        assert f["win_rate"] == pytest.approx((f["wins"] + f["ties"] / 2) / 4)
        if dim != "reward":
            diffs = [scores[str(Path(p["aligned"]).resolve())][dim] - scores[str(Path(p["base"]).resolve())][dim]
                     for p in report["pairs"]]
            assert (f["wins"], f["losses"]) == (sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))
    assert sum(report["figures"][d]["ties"] for d in DIMS) < 4 * len(DIMS)  # not all ties
    overall = [p["scores"]["aligned"]["reward"] for p in report["pairs"]]
    assert overall == pytest.approx([sum(p["scores"]["aligned"][d] for d in DIMS[:3]) / 3 for p in report["pairs"]])


def test_lora_file_is_fused_into_the_base(cli, inputs, run_ties, tmp_path):
    """A LoRA given as its .safetensors file changes the aligned videos; the base videos stay those of run_ties."""
    out = tmp_path / "lora"
    _winrate(cli, out, "--aligned", inputs.lora_file, "--prompts", inputs.txt, "--limit", 1,
             "--reward.model", TINY_RANDOM)
    report = _json(out)
    assert report["figures"]["VQ"]["n"] == 1 and not report["pairs"][0]["identical"]
    assert (out / "videos" / "base" / "00000.mp4").read_bytes() == (run_ties.out / "videos" / "base" /
                                                                      "00000.mp4").read_bytes()


def test_resume_reuses_everything_and_refuses_other_settings(run_diff, cli, inputs, tmp_path):
    out = run_diff.out
    mtimes = {f: f.stat().st_mtime_ns for f in (out / "videos").rglob("*.mp4")}
    result = _winrate(cli, out, *run_diff.args)
    assert "base 4 reused, 0 to sample; aligned 4 reused, 0 to sample" in result.output
    assert "8 already scored, 0 to score" in result.output
    assert {f: f.stat().st_mtime_ns for f in (out / "videos").rglob("*.mp4")} == mtimes
    assert _json(out)["figures"] == run_diff.report["figures"]
    # an interrupted run: one aligned video and its score missing -> only that one is sampled and scored, the same
    video = out / "videos" / "aligned" / "00001-00.mp4"
    before = video.read_bytes()
    video.unlink()
    scores = out / "scores.jsonl"
    scores.write_text("".join(line + "\n" for line in scores.read_text().splitlines()
                              if json.loads(line)["path"] != str(video.resolve())))
    result = _winrate(cli, out, *run_diff.args)
    assert "aligned 3 reused, 1 to sample" in result.output and "7 already scored, 1 to score" in result.output
    assert video.read_bytes() == before and _same_figures(_json(out)["figures"], run_diff.report["figures"])
    # a report setting may change (nothing is resampled or rescored): a huge tie threshold ties everything
    result = _winrate(cli, out, *run_diff.args, "--tie-threshold", 1e6)
    assert "8 already scored, 0 to score" in result.output
    assert all(_json(out)["figures"][d]["win_rate"] == 0.5 for d in DIMS)
    # settings that change videos or scores are refused, naming the field
    for extra, needle in ((("--steps", 3), "steps: 2 -> 3"), (("--seed", 5), "seed: 0 -> 5"),
                          (("--set", "reward.max_pixels=4096"), "reward.max_pixels: None -> 4096")):
        result = _winrate(cli, out, *run_diff.args, *extra, ok=False)
        assert result.exit_code == 2 and len(cli.error_lines(result.output)) == 1, result.output
        assert needle in result.output and "--output-dir" in result.output
    other = tmp_path / "other.txt"
    other.write_text("a green field\na boat at sea\n")
    args = [a if a != inputs.csv else other for a in run_diff.args]
    result = _winrate(cli, out, *args, ok=False)
    assert result.exit_code == 2 and "prompts: prompt 0" in result.output and "a green field" in result.output
    _winrate(cli, out, *run_diff.args)  # restore the report
    assert _same_figures(_json(out)["figures"], run_diff.report["figures"])


def test_existing_videos_are_reused(run_ties, cli, tmp_path):
    """--base-videos and --aligned-videos: no video model, no videos/ folder; the same figures."""
    out = tmp_path / "reuse"
    prompts = Path(run_ties.report["settings"]["prompts"])
    result = _winrate(cli, out, "--prompts", prompts, "--base-videos", run_ties.out / "videos" / "base",
                      "--aligned-videos", run_ties.out / "videos" / "aligned", "--set", "base=/nonexistent/model")
    assert "base from" in result.output and "aligned from" in result.output and not (out / "videos").exists()
    assert _json(out)["figures"] == run_ties.report["figures"]
    # one video missing from a given folder
    partial = tmp_path / "partial"
    shutil.copytree(run_ties.out / "videos" / "base", partial)
    (partial / "00001.mp4").unlink()
    result = _winrate(cli, tmp_path / "p", "--prompts", prompts, "--base-videos", partial, "--aligned", TINY_RANDOM,
                      ok=False)
    assert result.exit_code == 2 and "base_videos: 1 of 3 videos missing" in result.output
    assert "00001.mp4" in result.output and not list((tmp_path / "p").rglob("*.mp4"))


def test_guide_output_as_base_videos(cli, shared_data, tmp_path):
    """`guide --scale 0` samples prompt i from seed + i into <i:05d>.mp4: the same videos as the base side here."""
    prompts = shared_data / "eval_prompts" / "TA_hard.csv"
    guided = tmp_path / "guide"
    result = cli.invoke("guide", "--recipe", REPO / "recipes" / "debug" / "guide.yaml", "--scale", 0, "--prompts",
                        prompts, "--limit", 2, "--steps", 2, "--output-dir", guided)
    assert result.exit_code == 0, result.output
    out = tmp_path / "winrate"
    _winrate(cli, out, "--prompts", prompts, "--limit", 2, "--base-videos", guided, "--aligned", TINY_RANDOM)
    report = _json(out)
    assert report["pairs"][0]["prompt"].startswith("A cat and a dog baking a cake")
    assert all(p["identical"] for p in report["pairs"]) and report["figures"]["TA"]["ties"] == 2


def test_bad_input_fails_at_once(cli, inputs, run_ties, tmp_path):
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    cases = [
        (["--prompts", tmp_path / "missing.csv", "--aligned", TINY_RANDOM], ["prompts:", "missing.csv", "no such file"]),
        (["--prompts", inputs.txt, "--aligned", TINY_RANDOM, "--base", tmp_path / "nope"],
         ["base:", "nope: no such file or folder"]),
        (["--prompts", inputs.txt, "--aligned", empty], ["aligned:", "not a model", "pytorch_lora_weights"]),
        (["--prompts", inputs.txt, "--aligned", inputs.other_lora],
         ["aligned: the LoRA", "does not fit the model", "adapts blocks.0.attn1.",
          "trained on as --base (tiny-random now)"]),
        (["--prompts", inputs.txt, "--aligned", garbage], ["garbage.safetensors: not a readable"]),
        (["--prompts", inputs.txt], ["aligned: required"]),
        (["--prompts", inputs.txt, "--aligned", TINY_RANDOM, "--tie-threshold", -1], ["tie_threshold must be"]),
        (["--prompts", inputs.txt, "--aligned", TINY_RANDOM, "--height", 20], ["height:", "multiple of 16"]),
    ]
    for args, needles in cases:
        out = tmp_path / "out"
        result = _winrate(cli, out, *args, ok=False)
        assert result.exit_code == 2, result.output
        assert len(cli.error_lines(result.output)) == 1, result.output
        for needle in needles:
            assert needle in result.output, (needle, result.output)
        assert not list(out.rglob("*.mp4")) and not (out / "winrate.config.yaml").exists()
    # weights are checked against the reward model's dimensions once it has scored (all cached here)
    result = _winrate(cli, run_ties.out, "--aligned", inputs.zero_lora, "--prompts", inputs.txt, "--weights", "1:1",
                      ok=False)
    assert result.exit_code == 2 and "weights:" in result.output and "needs 3 values" in result.output


def test_real_recipe_resolves(inputs, shared_data, monkeypatch):
    from videoalign.commands.bench.winrate import WinrateConfig
    from videoalign.config import build_config, load_recipe

    monkeypatch.chdir(REPO)  # the recipe names ../shared/data/... relative to the repo
    cfg = build_config(WinrateConfig, load_recipe(REPO / "recipes" / "bench" / "winrate_wan2_1_t2v_1_3b.yaml"),
                       {"aligned": str(inputs.zero_lora)})
    assert (cfg.base, cfg.num_frames, cfg.height, cfg.width, cfg.steps, cfg.guidance_scale) == (
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 81, 480, 832, 50, 5.0)
    assert cfg.reward.model == "KwaiVGI/VideoReward" and cfg.prompts.endswith("videogen_eval.csv")


@pytest.mark.multiprocess
def test_two_processes_equal_one(run_diff, cli, tmp_path):
    out = tmp_path / "two"
    cmd = ["accelerate", "launch", "--num_processes", "2", "--cpu", "-m", "videoalign", "bench", "winrate",
           "--recipe", str(RECIPE), "--output-dir", str(out), *[str(a) for a in run_diff.args]]
    proc = subprocess.run(cmd, cwd=REPO, env=cli.env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on 2 process(es)" in proc.stdout + proc.stderr
    one, two = run_diff.report, _json(out)
    assert _mp4s(out / "videos" / "aligned") == _mp4s(run_diff.out / "videos" / "aligned")
    assert _same_figures(one["figures"], two["figures"])
    for p, q in zip(one["pairs"], two["pairs"]):
        assert (p["index"], p["video"], p["seed"]) == (q["index"], q["video"], q["seed"])
        for side in ("base", "aligned"):
            assert q["scores"][side] == pytest.approx(p["scores"][side], abs=1e-5)


def test_a_full_fine_tune_is_the_same_model_as_its_pipeline(cli, inputs, run_diff, tmp_path):
    """dpo/rwr with lora.enabled false export final/transformer/; as --aligned it replaces the base's transformer,
    which gives the perturbed pipeline's figures exactly (the same weights, seeds and sampler)."""
    out = tmp_path / "full"
    args = [a if a != inputs.perturbed else inputs.full_finetune for a in run_diff.args]
    _winrate(cli, out, *args)
    assert _json(out)["figures"] == run_diff.report["figures"]
    result = _winrate(cli, tmp_path / "other", "--aligned", inputs.other_full, "--prompts", inputs.txt, ok=False)
    assert result.exit_code == 2 and cli.error_lines(result.output) == [
        f"error: aligned: {inputs.other_full / 'transformer'} is another architecture: attention_head_dim is 8, the "
        "model's is 16; pass the model it was trained on as --base (tiny-random now)"]
    assert not (tmp_path / "other" / "videos").exists()  # refused before sampling anything
