"""`videoalign rwr` end to end through the CLI on recipes/debug/rwr.yaml and a tiny-random Wan: Flow-RWR from
relabel's pairs, from score's JSONL, the SFT baseline from a label-only pair CSV, and 1 == 2 processes with
batch-normalised weights."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "debug" / "rwr.yaml"
QUIET = ["--set", "validate_every=0", "--set", "save_every=0"]


def _rwr(cli, data: Path, out: Path, *args, cache: Path | None = None, ok: bool = True):
    extra = ["--set", f"cache_dir={cache}"] if cache else []
    result = cli.invoke("rwr", "--recipe", RECIPE, "--data", data, "--output-dir", out, *extra, *args)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rwr_cache")


@pytest.fixture(scope="module")
def run_a(cli, pair_file, cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rwr") / "a"
    _rwr(cli, pair_file, out, cache=cache)
    return out


def test_debug_recipe_end_to_end(run_a, pair_file):
    records = _metrics(run_a)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    # exp weights normalised over each global batch of 2 videos: mean weight 1
    for r in records:
        assert r["weight"] == pytest.approx(1.0, abs=1e-6)
    assert {d.name for d in (run_a / "checkpoints").iterdir()} == {"step-2", "step-4"}
    assert len(list((run_a / "samples" / "final").glob("*.mp4"))) == 1
    assert (run_a / "final" / "pytorch_lora_weights.safetensors").is_file()


def test_resume_after_sigkill_gives_the_uninterrupted_run(cli, pair_file, cache, run_a, tmp_path):
    """Killed with SIGKILL after step 3 (checkpoint at 2) and resumed: the uninterrupted run's metrics and LoRA."""
    from safetensors.torch import load_file

    out = tmp_path / "b"
    argv = ["rwr", "--recipe", RECIPE, "--data", pair_file, "--output-dir", out, "--set", f"cache_dir={cache}"]
    cli.kill_and_resume(argv, out, kill_after=3)
    assert [r["loss"] for r in _metrics(out)] == [r["loss"] for r in _metrics(run_a)]
    assert cli.strip_times(_metrics(out)) == cli.strip_times(_metrics(run_a))
    a, b = (load_file(str(d / "final" / "pytorch_lora_weights.safetensors")) for d in (out, run_a))
    assert sorted(a) == sorted(b) and all(a[k].equal(b[k]) for k in a)


def test_sft_baseline_from_a_label_only_pair_csv(cli, pair_file, cache, tmp_path):
    """A reference pair CSV (labels, no scores): uniform weights on the chosen side only = the paper's SFT."""
    rows = [json.loads(x) for x in pair_file.read_text().splitlines()]
    data = pair_file.parent / "pairs_labels.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path_A", "path_B", "prompt", "VQ", "MQ", "TA"])
        for i, r in enumerate(rows):  # alternate sides so the reader must orient them
            a, b = (r["chosen"], r["rejected"]) if i % 2 else (r["rejected"], r["chosen"])
            label = "A" if i % 2 else "B"
            writer.writerow([a, b, r["prompt"], label, label, "same"])
    out = tmp_path / "sft"
    result = _rwr(cli, data, out, "--weighting", "uniform", "--chosen-only", *QUIET, cache=cache)
    assert "8 video items (0 skipped)" in " ".join(result.output.split())
    for r in _metrics(out):
        assert r["weight"] == 1.0
    refused = _rwr(cli, data, tmp_path / "exp", "--weighting", "exp", *QUIET, cache=cache, ok=False)
    assert refused.exit_code == 2 and "no scores" in refused.output


def test_scored_videos_file(cli, pair_file, cache, tmp_path):
    """score's JSONL: every video with its own reward (weighted normalised scores)."""
    rows = [json.loads(x) for x in pair_file.read_text().splitlines()]
    records = []
    for r in rows:
        for side in ("chosen", "rejected"):
            path = str(pair_file.parent / r[side])
            records.append({"video": path, "path": path, "prompt": r["prompt"], **r["scores"][side],
                            "Overall": sum(r["scores"][side].values())})
    records.append({"video": "gone.mp4", "prompt": "p", "error": "cannot decode"})
    data = pair_file.parent / "scores.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in records))
    out = tmp_path / "scored"
    result = _rwr(cli, data, out, "--set", "weights=0:0:1", "--set", "normalize=false", *QUIET, cache=cache)
    assert "16 video items (1 skipped)" in " ".join(result.output.split())
    rewards = [r["reward"] for r in _metrics(out)]
    assert all(0.09 < x < 1.3 for x in rewards)  # TA-only rewards of the toy file lie in [0.1, 1.2]
    for r in _metrics(out):  # unnormalised exp weights: mean w = mean exp(r) within the batch
        assert r["weight"] > 1.0


@pytest.mark.multiprocess
def test_two_processes_equal_one(cli, pair_file, run_a, tmp_path):
    """exp weights normalised over the global batch: the same numbers on 1 and 2 processes."""
    out = tmp_path / "two"
    cmd = ["accelerate", "launch", "--num_processes", "2", "--cpu", "-m", "videoalign", "rwr", "--recipe", str(RECIPE),
           "--data", str(pair_file), "--output-dir", str(out), "--grad-accum", "1"]
    proc = subprocess.run(cmd, cwd=REPO, env=cli.env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [r["loss"] for r in _metrics(out)] == pytest.approx([r["loss"] for r in _metrics(run_a)], abs=1e-6)
    one = load_file(str(run_a / "final" / "pytorch_lora_weights.safetensors"))
    two = load_file(str(out / "final" / "pytorch_lora_weights.safetensors"))
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=1e-6, rtol=0)
