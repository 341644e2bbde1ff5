"""`videoalign train-latent-rm` end to end through the CLI on recipes/debug/train_latent_rm.yaml and a tiny-random
Wan: the step-1 BTT loss at r = 0, checkpoints, eval.json per noise bin, the PNG, the saved final/ model, resume ==
uninterrupted, bad lines, 1 == 2 processes, and that it learns a toy per-dimension preference placed in the latents.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

from videoalign.gen.latent_cache import CacheSpec, LatentCache
from videoalign.trainer import step_indices

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "debug" / "train_latent_rm.yaml"
DIMS = ["VQ", "MQ", "TA"]
LN_THETA = math.log(5.0)
#: BTT at d = 0, theta = 5 (docs/numerics.md, Reward losses): win -log sigmoid(-ln 5) = ln 6; tie 2 ln 6 - ln 24 = ln 1.5
WIN = -math.log(1 / (1 + math.exp(LN_THETA)))
TIE = 2 * WIN - math.log(5.0 ** 2 - 1)
SIDE = {"chosen": 1, "rejected": -1, "tie": 0}


def _train(cli, data: Path, out: Path, *args, cache: Path | None = None, ok: bool = True):
    extra = ["--set", f"cache_dir={cache}"] if cache else []
    result = cli.invoke("train-latent-rm", "--recipe", RECIPE, "--data", data, "--output-dir", out, *extra, *args)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def labelled(pair_file) -> Path:
    """The 8 toy pairs with relabel's per-dimension labels: a chosen/rejected/tie mix, pair 0 without TA (22)."""
    mix = ["chosen", "rejected", "tie"]
    lines = [json.loads(x) for x in pair_file.read_text().splitlines()]
    for i, line in enumerate(lines):
        line["labels"] = {d: mix[(i + k) % 3] for k, d in enumerate(DIMS)} | {"Overall": "chosen"}
        if i == 0:
            del line["labels"]["TA"]
    path = pair_file.parent / "labelled.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("latent_rm_cache")


@pytest.fixture(scope="module")
def run_a(cli, labelled, cache, tmp_path_factory) -> Path:
    """The debug recipe uninterrupted: 4 steps of 2 pairs (batch 1 x 2 accumulation), checkpoints and eval at 2, 4."""
    out = tmp_path_factory.mktemp("latent_rm") / "a"
    _train(cli, labelled, out, cache=cache)
    return out


def _expected_first_loss(labelled: Path) -> float:
    """The rewards start at exactly 0 (zero heads), so step 1's loss is the mean BTT at d = 0 over the entries of
    its 2 pairs, masked ones counting in the denominator (compat): win/loss ln 6, tie ln 1.5, missing 0."""
    lines = [json.loads(x) for x in labelled.read_text().splitlines()]
    entries = []
    for i in step_indices(0, len(lines), 2, 42):
        for d in DIMS:
            label = lines[i]["labels"].get(d)
            entries.append(0.0 if label is None else TIE if label == "tie" else WIN)
    return sum(entries) / len(entries)


def test_debug_recipe_end_to_end(run_a, labelled):
    from videoalign.gen.latent_reward import load_latent_reward

    records = _metrics(run_a)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert records[0]["loss"] == pytest.approx(_expected_first_loss(labelled), abs=1e-6)
    assert {d.name for d in (run_a / "checkpoints").iterdir()} == {"step-2", "step-4"}
    report = json.loads((run_a / "eval.json").read_text())
    bins = ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]
    assert report["noise_bins"] == bins and list(report["steps"]) == ["2", "4"]
    for dim in DIMS:
        for b in bins:
            cell = report["steps"]["4"][dim][b]
            assert cell["pairs"] == (7 if dim == "TA" else 8)  # pair 0 has no TA label
            assert 0.0 <= cell["accuracy_with_ties"] <= 1.0 and 0.0 <= cell["accuracy_without_ties"] <= 1.0
    assert (run_a / "eval.png").stat().st_size > 1000
    assert (run_a / "resolved_recipe.yaml").is_file()
    model = load_latent_reward(run_a / "final")
    assert model.dims == DIMS and model.cfg.k == 1
    torch.manual_seed(0)
    rewards = model(torch.randn(2, 16, 3, 4, 4), torch.tensor([0.2, 0.9]), torch.randn(2, 32, 32))
    assert rewards.shape == (2, 3) and torch.isfinite(rewards).all() and rewards.abs().max() > 0


def test_resume_after_sigkill_gives_the_uninterrupted_run(cli, labelled, cache, run_a, tmp_path):
    """Killed with SIGKILL after step 3 (checkpoint at 2) and resumed: the uninterrupted run's metrics, eval.json
    and final weights."""
    from safetensors.torch import load_file

    out = tmp_path / "b"
    argv = ["train-latent-rm", "--recipe", RECIPE, "--data", labelled, "--output-dir", out, "--set",
            f"cache_dir={cache}"]
    result = cli.kill_and_resume(argv, out, kill_after=3)
    assert "resumed from" in result.output
    assert [r["loss"] for r in _metrics(out)] == [r["loss"] for r in _metrics(run_a)]
    assert cli.strip_times(_metrics(out)) == cli.strip_times(_metrics(run_a))
    assert json.loads((out / "eval.json").read_text())["steps"] == json.loads((run_a / "eval.json").read_text())["steps"]
    a, b = (load_file(str(d / "final" / "model.safetensors")) for d in (out, run_a))
    assert sorted(a) == sorted(b) and all(a[k].equal(b[k]) for k in a)
    assert json.loads((out / "eval.json").read_text())["steps"]["4"] == \
        json.loads((run_a / "eval.json").read_text())["steps"]["4"]
    refused = _train(cli, labelled, out, "--resume", "--batch-size", "2", "--max-steps", "6", cache=cache, ok=False)
    assert refused.exit_code == 2 and "global_batch 2 -> 4" in refused.output


def test_bad_lines_are_reported_with_line_numbers(cli, labelled, cache, tmp_path):
    lines = labelled.read_text().splitlines()
    no_labels = json.loads(lines[0])
    no_labels["labels"] = {"VQ": "maybe"}  # not a label: reported like any value outside the vocabulary
    missing = dict(json.loads(lines[1]), rejected="videos/nowhere.mp4")
    data = labelled.parent / "labelled_bad.jsonl"
    data.write_text("\n".join([*lines, "{not json", json.dumps({"prompt": "x", "chosen": "videos/p0_chosen.mp4"}),
                               json.dumps(missing), json.dumps(no_labels)]) + "\n")
    result = _train(cli, data, tmp_path / "bad", "--max-steps", "1", "--set", "save_every=0", cache=cache)
    output = " ".join(result.output.split())
    for n in (9, 10, 11, 12):
        assert f"line {n}:" in output, n
    assert "not valid JSON" in output and "missing field 'rejected'" in output and "nowhere.mp4" in output
    assert "VQ label 'maybe' is unknown" in output and "8 pair items (4 skipped)" in output


@pytest.mark.parametrize("args, field", [
    (["--set", "num_frames=10"], "num_frames"),
    (["--set", "height=40"], "height"),
    (["--set", "dtype=float16"], "dtype"),
    (["--set", "theta=1.0"], "theta"),
    (["--set", "reward.k=0"], "k"),
])
def test_impossible_recipes_fail_before_any_model_loads(cli, labelled, tmp_path, args, field):
    out = tmp_path / "never"
    result = _train(cli, labelled, out, *args, ok=False)
    assert result.exit_code == 2 and field in result.output
    assert not out.exists()


@pytest.mark.multiprocess
def test_two_processes_equal_one(cli, labelled, run_a, tmp_path):
    """Same global batch (2 pairs): 2 processes x batch 1 == 1 process x batch 1 x 2 accumulation steps (run_a).
    The weights agree to fp32 reassociation of the gradient sum (about 1e-6 after Adam at lr 1e-3)."""
    out = tmp_path / "two"
    cmd = ["accelerate", "launch", "--num_processes", "2", "--cpu", "-m", "videoalign", "train-latent-rm", "--recipe",
           str(RECIPE), "--data", str(labelled), "--output-dir", str(out), "--grad-accum", "1"]
    proc = subprocess.run(cmd, cwd=REPO, env=cli.env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on 2 process(es)" in proc.stdout + proc.stderr
    assert [r["loss"] for r in _metrics(out)] == pytest.approx([r["loss"] for r in _metrics(run_a)], abs=1e-6)
    from safetensors.torch import load_file

    one, two = load_file(str(run_a / "final" / "model.safetensors")), load_file(str(out / "final" / "model.safetensors"))
    assert sorted(one) == sorted(two)
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=0)  # all-reduce order: fp32 reassociation


# -- it learns: a per-dimension preference placed in the latents ----------------------------------------------

TOY_PAIRS = 16


def test_learns_a_toy_per_dimension_preference(cli, tmp_path):
    """Pair i has labels y_d = +-1 per dimension d (seeded); side A's latent channel d is shifted by +y_d and
    B's by -y_d, on shared N(0, 0.5^2) content. The tiny random VAE is nearly blind to pixels, so (as in
    test_alignment.py) the latents are written straight into the cache for the pair file's clips. After 30
    steps the model must rank the pairs well above chance at low noise, in every dimension."""
    root = tmp_path / "toy"
    g = torch.Generator().manual_seed(0)
    cache = LatentCache(root / "cache", CacheSpec("tiny-random", 9, 32, 32, None, "crop", 32))
    lines = []
    for i in range(TOY_PAIRS):
        labels = (torch.randint(0, 2, (3,), generator=g) * 2 - 1).tolist()
        content = 0.5 * torch.randn(16, 3, 4, 4, generator=g)
        for side, sign in (("chosen", 1.0), ("rejected", -1.0)):
            clip = cli.make_clip(root / "clips" / f"t{i}_{side}.mp4", seed=i, height=32, width=32, frames=9)
            z = content.clone()
            for d, y in enumerate(labels):
                z[d] += sign * y
            cache.put_video(clip, z)
        lines.append({"prompt": cli.prompts[i % 4], "chosen": f"clips/t{i}_chosen.mp4",
                      "rejected": f"clips/t{i}_rejected.mp4",
                      "labels": {d: "chosen" if y > 0 else "rejected" for d, y in zip(DIMS, labels)}})
    (root / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = root / "out"
    _train(cli, root / "pairs.jsonl", out, "--set", f"cache_dir={root / 'cache'}", "--max-steps", "30",
           "--batch-size", "4", "--grad-accum", "1", "--lr", "3e-3", "--set", "save_every=0", "--set", "eval_every=0")
    report = json.loads((out / "eval.json").read_text())["steps"]["30"]
    print(json.dumps({d: {b: c["accuracy_without_ties"] for b, c in report[d].items()} for d in DIMS}))
    for d in DIMS:
        assert report[d]["0.0-0.2"]["accuracy_without_ties"] >= 0.85, (d, report[d])
    losses = [r["loss"] for r in _metrics(out)]
    assert sum(losses[-5:]) / 5 < losses[0]


def test_trained_model_guides_sampling(cli, run_a, tmp_path):
    """The README's NRG path: train-latent-rm's final/ -> `videoalign guide` with per-dimension weights."""
    meta = json.loads((run_a / "final" / "config.json").read_text())
    assert (meta["num_frames"], meta["height"], meta["width"]) == (9, 32, 32)  # guide's default clip size
    out = tmp_path / "guided"
    result = cli.invoke("guide", "--model", "tiny-random", "--latent-rm", run_a / "final", "--prompt",
                        "a red ball rolling on grass", "--weights", "0.1:0.1:0.8", "--scale", "4", "--steps", "3",
                        "--output-dir", out, "--set", "dtype=float32", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = cli.read_jsonl(out / "guide.jsonl")
    assert len(lines) == 1 and len(lines[0]["trajectory"]) == 3
    assert (out / "00000.mp4").stat().st_size > 0


@pytest.mark.multiprocess
def test_fsdp_is_refused_with_the_reason(cli, labelled, tmp_path):
    """Under an FSDP launch config it stops at once (exit 2, one line) instead of crashing in a sharded step."""
    fsdp = REPO / "recipes" / "accelerate" / "fsdp_cpu_debug.yaml"
    cmd = ["accelerate", "launch", "--config_file", str(fsdp), "-m", "videoalign", "train-latent-rm", "--recipe",
           str(RECIPE), "--data", str(labelled), "--output-dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=REPO, env=cli.env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert "error: train-latent-rm does not support FSDP" in proc.stdout + proc.stderr
