"""`videoalign dpo` end to end through the CLI on recipes/debug/dpo.yaml and a tiny-random Wan.

Covers: per-step losses (ln 2 at LoRA init), checkpoints, resume == uninterrupted, validation mp4s, the
diffusers LoRA export and --merge, cached latents == on-the-fly encoding, gradient accumulation and
checkpointing invariants, full fine-tuning, bad pair lines, impossible recipes, and 1 == 2 processes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "debug" / "dpo.yaml"
LN2 = math.log(2)


def _dpo(cli, pairs: Path, out: Path, *args, cache: Path | None = None, ok: bool = True):
    extra = ["--set", f"cache_dir={cache}"] if cache else []
    result = cli.invoke("dpo", "--recipe", RECIPE, "--data", pairs, "--output-dir", out, *extra, *args)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in _metrics(out)]


def _lora(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / "pytorch_lora_weights.safetensors"))


def _assert_same_lora(a: Path, b: Path, atol: float = 0.0):
    x, y = _lora(a), _lora(b)
    assert sorted(x) == sorted(y)
    for k in x:
        torch.testing.assert_close(x[k], y[k], atol=atol, rtol=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dpo_cache")


@pytest.fixture(scope="module")
def run_a(cli, pair_file, cache, tmp_path_factory) -> Path:
    """The debug recipe uninterrupted: 4 steps of 2 pairs, checkpoints and samples at 2 and 4, --merge."""
    out = tmp_path_factory.mktemp("dpo") / "a"
    _dpo(cli, pair_file, out, "--merge", cache=cache)
    return out


def test_debug_recipe_end_to_end(run_a):
    records = _metrics(run_a)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    first = records[0]
    # LoRA B = 0 at step 1: policy == reference, so inside = 0 and the loss is ln 2 (docs/numerics.md, Flow-DPO)
    assert first["loss"] == pytest.approx(LN2, abs=1e-6) and first["inside"] == 0.0
    assert first["policy_chosen_err"] == first["ref_chosen_err"]
    for key in ("implicit_acc", "reward_margin", "w_diff", "l_diff", "policy_rejected_err", "ref_rejected_err"):
        assert key in first
    losses = _losses(run_a)
    assert all(math.isfinite(x) for x in losses) and losses[-1] < LN2  # the toy preference is learnable
    assert records[-1]["implicit_acc"] > 0.5
    assert {d.name for d in (run_a / "checkpoints").iterdir()} == {"step-2", "step-4"}
    for folder in ("step-2", "step-4", "final"):
        mp4s = list((run_a / "samples" / folder).glob("*.mp4"))
        assert len(mp4s) == 1 and mp4s[0].stat().st_size > 0
    assert (run_a / "resolved_recipe.yaml").is_file()
    assert (run_a / "merged" / "model_index.json").is_file()


def test_resume_after_sigkill_gives_the_uninterrupted_run(cli, pair_file, cache, run_a, tmp_path):
    """Killed with SIGKILL after step 3 (the last checkpoint is step 2), resumed: metrics.jsonl holds exactly the
    uninterrupted run's steps and figures (step 3 is not logged twice), and the final LoRA is the same."""
    out = tmp_path / "b"
    argv = ["dpo", "--recipe", RECIPE, "--data", pair_file, "--output-dir", out, "--merge", "--set",
            f"cache_dir={cache}"]
    result = cli.kill_and_resume(argv, out, kill_after=3)
    assert "resumed from" in result.output and "at step 2" in result.output
    assert cli.strip_times(_metrics(out)) == cli.strip_times(_metrics(run_a))
    assert _losses(out) == _losses(run_a)
    _assert_same_lora(out, run_a)
    # other batch settings would silently change the data order: refused
    refused = _dpo(cli, pair_file, out, "--resume", "--batch-size", "2", "--max-steps", "6", cache=cache, ok=False)
    assert refused.exit_code == 2 and "global_batch 2 -> 4" in refused.output


def test_exported_lora_loads_and_merges_like_the_live_adapter(run_a):
    """final/ through WanPipeline.load_lora_weights == merged/ (fused) on the same inputs."""
    from videoalign.gen.generator import load_generator
    from videoalign.gen.lora import load_lora

    lora = load_lora(load_generator("tiny-random", "float32"), run_a / "final")
    merged = load_generator(str(run_a / "merged"), "float32")
    base = load_generator("tiny-random", "float32")
    torch.manual_seed(0)
    x, t, text = torch.randn(2, 16, 3, 4, 4), torch.tensor([0.3, 0.9]), torch.randn(2, 32, 32)
    v_lora, v_merged, v_base = (g.velocity(x, t, text) for g in (lora, merged, base))
    torch.testing.assert_close(v_lora, v_merged, atol=1e-5, rtol=0)
    assert (v_lora - v_base).abs().max() > 1e-4  # the adapter did train


def test_cached_latents_equal_on_the_fly_encoding(cli, pair_file, cache, run_a, tmp_path):
    out = tmp_path / "fly"
    _dpo(cli, pair_file, out, "--set", "latent_cache=false", "--set", "validate_every=0",
         "--set", "validation_prompts=[]", "--set", "save_every=0")
    assert not (out / "cache").exists()
    assert _losses(out) == pytest.approx(_losses(run_a), abs=1e-6)
    _assert_same_lora(out, run_a, atol=1e-6)


def test_accumulation_and_checkpointing_do_not_change_the_numbers(cli, pair_file, cache, run_a, tmp_path):
    """batch 1 x 2 accumulation steps (the recipe) == batch 2 x 1; gradient checkpointing changes nothing.
    Batch 2 runs other matmul shapes, so equality holds to float reassociation (Adam amplifies 1e-7 to ~1e-4)."""
    quiet = ["--set", "validate_every=0", "--set", "save_every=0"]
    _dpo(cli, pair_file, tmp_path / "b2", "--batch-size", "2", "--grad-accum", "1", *quiet, cache=cache)
    _dpo(cli, pair_file, tmp_path / "gc", "--set", "gradient_checkpointing=true", *quiet, cache=cache)
    assert _losses(tmp_path / "gc") == pytest.approx(_losses(run_a), abs=1e-6)
    _assert_same_lora(tmp_path / "gc", run_a, atol=1e-6)
    assert _losses(tmp_path / "b2") == pytest.approx(_losses(run_a), rel=1e-3)
    _assert_same_lora(tmp_path / "b2", run_a, atol=1e-3)


@pytest.mark.parametrize("batch", ["1", "2"])
def test_split_backward_gives_the_joint_gradient(cli, pair_file, cache, run_a, tmp_path, batch):
    """backward: split (one video's graph at a time, scaled by dL/de) trains like the joint forward."""
    accum = "2" if batch == "1" else "1"
    out = tmp_path / "split"
    _dpo(cli, pair_file, out, "--set", "backward=split", "--batch-size", batch, "--grad-accum", accum,
         "--set", "validate_every=0", "--set", "save_every=0", cache=cache)
    records, joint = _metrics(out), _metrics(run_a)
    # inside = beta/2 x a difference of ~1.5-sized errors: fp32 rounding (1e-7) x 2500 allows ~1e-3 absolute; the
    # loss, -log sigmoid(inside), moves by at most as much (its slope is sigmoid(-inside) < 1): 1e-3 too (1e-4 failed
    # on an AMD EPYC machine: 1.5e-4)
    for key, tol in (("loss", 1e-3), ("inside", 1e-3), ("policy_chosen_err", 1e-6), ("ref_rejected_err", 1e-6)):
        assert [r[key] for r in records] == pytest.approx([r[key] for r in joint], abs=tol), key
    _assert_same_lora(out, run_a, atol=1e-3)


def test_ema_is_exported_and_resumes(cli, pair_file, cache, run_a, tmp_path):
    quiet = ["--set", "validate_every=0", "--set", "ema_decay=0.5"]
    _dpo(cli, pair_file, tmp_path / "ema", *quiet, cache=cache)
    live, ema = _lora(run_a), _lora(tmp_path / "ema")
    assert any((live[k] - ema[k]).abs().max() > 1e-6 for k in live)  # the average, not the live weights
    _dpo(cli, pair_file, tmp_path / "ema2", "--max-steps", "2", *quiet, cache=cache)
    _dpo(cli, pair_file, tmp_path / "ema2", "--resume", *quiet, cache=cache)
    _assert_same_lora(tmp_path / "ema2", tmp_path / "ema")


def test_full_fine_tuning_keeps_a_frozen_reference(cli, pair_file, cache, tmp_path):
    out = tmp_path / "full"
    _dpo(cli, pair_file, out, "--set", "lora.enabled=false", "--max-steps", "2", "--set", "validate_every=0",
         "--set", "save_every=0", "--lr", "1e-4", cache=cache)
    losses = _losses(out)
    assert losses[0] == pytest.approx(LN2, abs=1e-6) and losses[1] != pytest.approx(LN2, abs=1e-6)
    assert (out / "final" / "transformer" / "config.json").is_file()


def test_full_fine_tuning_in_bfloat16(cli, pair_file, tmp_path):
    """bf16 full fine-tuning: float32 masters, the forwards in bf16 under autocast, the frozen bf16 reference under
    the same autocast; it used to fail at the first forward (bf16 input, float32 patch-embedding bias). Step 1: the
    masters are the bf16 weights upcast, so policy and reference compute alike and the loss is ln 2. Step 2 is not
    asserted to be lower: beta 5000 times bf16 rounding of the errors (~1e-3) moves `inside` by units, so one bf16
    step can go either way (0.989 on an AMD EPYC machine); it must differ from ln 2 (the update took effect)."""
    out = tmp_path / "full_bf16"
    _dpo(cli, pair_file, out, "--set", "lora.enabled=false", "--set", "dtype=bfloat16", "--max-steps", "2",
         "--set", "validate_every=0", "--set", "save_every=0", "--lr", "1e-4", "--set", "latent_cache=false")
    losses = _losses(out)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(LN2, abs=1e-6) and losses[1] != pytest.approx(LN2, abs=1e-6)
    config = json.loads((out / "final" / "transformer" / "config.json").read_text())
    assert config["_class_name"] == "WanTransformer3DModel"


def test_bad_pair_lines_are_reported_skipped_and_counted(cli, pair_file, cache, tmp_path):
    lines = pair_file.read_text().splitlines()
    root = pair_file.parent
    broken = root / "videos" / "broken_for_dpo.mp4"
    broken.write_bytes(b"not a video at all")
    bad = json.loads(lines[0])
    bad["chosen"] = str(broken)
    missing = dict(json.loads(lines[1]), rejected="videos/nowhere.mp4")
    text = "\n".join([*lines, "{not json", json.dumps({"prompt": "x", "chosen": "videos/p0_chosen.mp4"}),
                      json.dumps(missing), json.dumps(bad), json.dumps({"video": "v.mp4", "prompt": "p",
                                                                        "error": "cannot decode"})]) + "\n"
    data = root / "pairs_with_bad_lines.jsonl"
    data.write_text(text)
    out = tmp_path / "bad"
    result = _dpo(cli, data, out, "--max-steps", "1", "--set", "validate_every=0", "--set", "save_every=0",
                  cache=cache)
    output = " ".join(result.output.split())
    for n in (9, 10, 11, 12, 13):
        assert f"line {n}:" in output, n
    assert "not valid JSON" in output and "missing field 'rejected'" in output and "nowhere.mp4" in output
    assert "broken_for_dpo.mp4" in output and "cannot decode" in output
    assert "8 pair items (5 skipped)" in output


@pytest.mark.parametrize("args, field", [
    (["--set", "dtype=float16"], "dtype"),
    (["--set", "num_frames=10"], "num_frames"),
    (["--set", "lora.targets=[attn1.to_q,attn3.to_k]"], "lora.targets"),
    (["--set", "height=40"], "height"),
    (["--beta", "-1"], "beta"),
])
def test_impossible_recipes_fail_before_any_model_loads(cli, pair_file, tmp_path, args, field):
    out = tmp_path / "never"
    result = _dpo(cli, pair_file, out, *args, ok=False)
    assert result.exit_code == 2
    assert field in result.output and "error" in result.output.lower()
    assert not out.exists()  # the config failed before run() created anything


def test_non_rectified_flow_family_is_refused_by_name(cli, pair_file, tmp_path):
    folder = tmp_path / "cogvideox"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    result = _dpo(cli, pair_file, tmp_path / "out", "--model", folder, ok=False)
    assert result.exit_code == 2
    assert "CogVideoX" in result.output and "rectified" in result.output


@pytest.mark.multiprocess
def test_two_processes_equal_one(cli, pair_file, run_a, tmp_path):
    """Same global batch (2 pairs): 2 processes x batch 1 x 1 micro-step == 1 process x batch 1 x 2 (run_a)."""
    out = tmp_path / "two"
    cmd = ["accelerate", "launch", "--num_processes", "2", "--cpu", "-m", "videoalign", "dpo", "--recipe", str(RECIPE),
           "--data", str(pair_file), "--output-dir", str(out), "--grad-accum", "1", "--merge"]
    proc = subprocess.run(cmd, cwd=REPO, env=cli.env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on 2 process(es)" in proc.stdout + proc.stderr
    assert _losses(out) == pytest.approx(_losses(run_a), abs=1e-6)
    _assert_same_lora(out, run_a, atol=1e-6)
    split = tmp_path / "two_split"
    proc = subprocess.run([*cmd[:cmd.index("--output-dir") + 1], str(split), "--grad-accum", "1", "--set",
                           "backward=split", "--set", "validate_every=0"],
                          cwd=REPO, env=cli.env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _losses(split) == pytest.approx(_losses(run_a), rel=1e-3, abs=1e-6)
    _assert_same_lora(split, run_a, atol=1e-3)
    # the cache was built by both ranks: every entry exactly once
    assert len(list((out / "cache").glob("*/videos/*.safetensors"))) == 16
    assert os.path.isdir(out / "samples" / "final")


def test_relabel_output_feeds_dpo(cli, pair_file, cache, tmp_path):
    """The README's path: a generation manifest -> `relabel` (VideoReward labels) -> `dpo` on its pairs JSONL."""
    rows = [json.loads(x) for x in pair_file.read_text().splitlines()]
    manifest = cli.write_csv(tmp_path / "manifest.csv", [
        (r["prompt"], str(pair_file.parent / r[side]), f"g{i}") for i, r in enumerate(rows[:4])
        for side in ("chosen", "rejected")], header=("prompt", "video", "group"))
    pairs = tmp_path / "relabelled.jsonl"
    result = cli.invoke("relabel", manifest, "--recipe", REPO / "recipes" / "debug" / "relabel.yaml",
                        "--output", pairs, "--pairing", "best-worst")
    assert result.exit_code == 0, result.output
    assert len(cli.read_jsonl(pairs)) == 4
    out = tmp_path / "dpo"
    _dpo(cli, pairs, out, "--max-steps", "2", "--set", "validate_every=0", "--set", "save_every=0", cache=cache)
    assert len(_losses(out)) == 2 and (out / "final" / "pytorch_lora_weights.safetensors").is_file()
