"""`videoalign train-reward` end to end through the CLI on the debug recipe and tiny models."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from videoalign.cli import app
from videoalign.video import write_video

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "debug" / "train_reward.yaml"
runner = CliRunner()


def _train(*args):
    result = runner.invoke(app, ["train-reward", "--recipe", str(RECIPE), *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _metrics(out) if "loss" in r}


@pytest.fixture(scope="module")
def example(shared_data) -> Path:
    return shared_data / "videoalign_examples" / "example.csv"


@pytest.fixture(scope="module")
def run_a(example, tmp_path_factory) -> Path:
    """The debug recipe uninterrupted: 4 steps of 2 pairs, checkpoints at 2 and 4, eval every 2."""
    out = tmp_path_factory.mktemp("train") / "a"
    _train("--train-csv", example, "--val-csv", example, "--output-dir", out, "--export-layout", "reference")
    return out


def test_debug_recipe_end_to_end(run_a, shared_data):
    losses = _losses(run_a)
    assert sorted(losses) == [1, 2, 3, 4] and all(np.isfinite(list(losses.values())))
    evals = [r for r in _metrics(run_a) if "eval" in r]
    assert [r["step"] for r in evals] == [2, 4, 4]  # every 2 steps, then the final evaluation
    for figures in evals[-1]["eval"].values():
        assert 0.0 <= figures["accuracy_without_ties"] <= 1.0 and figures["pairs"] > 0
    assert {d.name for d in (run_a / "checkpoints").iterdir()} == {"step-2", "step-4"}
    assert (run_a / "resolved_recipe.yaml").is_file()
    # The final model loads in `videoalign score`, in our format and in the reference layout alike.
    clip = shared_data / "videoalign_examples" / "videos" / "example_3_B.mp4"
    scores = []
    for folder in ("final", "final_reference"):
        result = runner.invoke(app, ["score", str(clip), "a prompt", "--model", str(run_a / folder), "--json",
                                     "--dtype", "float32"])
        assert result.exit_code == 0, result.output
        scores.append(json.loads(result.stdout.strip().splitlines()[-1])["raw"])
    for dim in ("VQ", "MQ", "TA"):
        assert scores[0][dim] == pytest.approx(scores[1][dim], abs=1e-5)
    assert (run_a / "final_reference" / "checkpoint-4" / "model.pth").is_file()


def test_resume_gives_the_losses_of_an_uninterrupted_run(run_a, example, tmp_path, cli):
    """Killed with SIGKILL after step 3 (checkpoint at 2) and resumed: steps 3 and 4 reproduce run A's losses,
    metrics.jsonl is run A's (evaluations included, step 3 logged once), and the final model is the same."""
    from safetensors.torch import load_file

    out = tmp_path / "b"
    argv = ["train-reward", "--recipe", RECIPE, "--train-csv", example, "--val-csv", example, "--output-dir", out,
            "--export-layout", "reference"]
    result = cli.kill_and_resume(argv, out, kill_after=3)
    assert "resumed from" in result.output and "at step 2" in result.output
    a, b = _losses(run_a), _losses(out)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        assert b[step] == pytest.approx(a[step], abs=1e-6)
    assert cli.strip_times(_metrics(out)) == cli.strip_times(_metrics(run_a))
    x, y = (load_file(str(d / "final" / "model.safetensors")) for d in (out, run_a))
    assert sorted(x) == sorted(y) and all(x[k].equal(y[k]) for k in x)


def test_accumulation_invariant(example, tmp_path):
    """batch 2 x 1 micro-step == batch 1 x 2 micro-steps: same pairs, same loss and update per step."""
    one, two = tmp_path / "b2", tmp_path / "a2"
    _train("--train-csv", example, "--output-dir", one, "--batch-size", "2", "--grad-accum", "1",
           "--set", "save_every=0", "--set", "eval_every=0")
    _train("--train-csv", example, "--output-dir", two, "--batch-size", "1", "--grad-accum", "2",
           "--set", "save_every=0", "--set", "eval_every=0")
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-5)


def test_bad_rows_are_reported_and_skipped(example, tmp_path):
    rows = example.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    broken = rows[1].replace(",B,B,A,", ",B,X,A,")  # a label typo
    absent = rows[2].replace("example_2_A", "nope")  # a missing video
    bad.write_text("\n".join([rows[0], broken, absent, *rows[3:]]) + "\n")
    result = _train("--train-csv", bad, "--output-dir", tmp_path / "o", "--max-steps", "1",
                    "--set", "save_every=0", "--set", "eval_every=0", "--set", f"videos_root={example.parent}")
    assert "line 2: MQ label 'X' is unknown" in result.output
    assert "line 3: missing video" in result.output and "nope.mp4" in result.output
    assert "10 training pairs (2 skipped, 7 repeated rows kept)" in result.output


@pytest.mark.multiprocess
def test_two_processes_give_the_losses_of_one(example, tmp_path):
    """Same global batch: 1 process x batch 2 vs 2 processes x batch 1 (DDP averages the gradients)."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--set", "save_every=0", "--set", "eval_every=0", "--grad-accum", "1"]
    _train("--train-csv", example, "--output-dir", one, "--batch-size", "2", *common)
    cmd = ["accelerate", "launch", "--num_processes", "2", "--cpu", "-m", "videoalign", "train-reward",
           "--recipe", str(RECIPE), "--train-csv", str(example), "--output-dir", str(two), "--batch-size", "1",
           *common]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "on 2 process(es)" in proc.stdout + proc.stderr
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-5)


def test_fine_tunes_an_existing_videoreward(shared_data, example, tmp_path):
    """--init-from a released-layout checkpoint: its dims and weights are the start, and training runs."""
    parity = shared_data / "videoreward" / "parity" / "tiny_videoreward_full"
    out = tmp_path / "ft"
    _train("--train-csv", example, "--output-dir", out, "--init-from", parity, "--max-steps", "2",
           "--set", "save_every=0", "--set", "eval_every=0", "--set", "max_pixels=200704",
           "--set", "min_pixels=100352")
    assert sorted(_losses(out)) == [1, 2]
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["reward"]["dims"] == ["VQ", "MQ", "TA"] and config["reward"]["output_dim"] == 1


def _brightness_set(root: Path) -> tuple[Path, Path]:
    """40 noisy clips of random brightness; a pair's label is A when A is brighter (|difference| > 30).
    Videos 0-29 train, 30-39 are held out, so validation pairs are unseen videos."""
    rng = np.random.default_rng(0)
    levels = []
    for i in range(40):
        level = int(rng.integers(20, 236))
        frames = np.clip(level + rng.normal(0, 20, size=(4, 56, 56, 3)), 0, 255).astype(np.uint8)
        write_video(root / "videos" / f"v{i}.mp4", frames, fps=4.0)
        levels.append(level)

    def pairs(ids, n, seed):
        r = random.Random(seed)
        cand = [(a, b) for a, b in itertools.combinations(ids, 2) if abs(levels[a] - levels[b]) > 30]
        r.shuffle(cand)
        lines = []
        for a, b in cand[:n]:
            a, b = (b, a) if r.random() < 0.5 else (a, b)
            lines.append(f"videos/v{a}.mp4,videos/v{b}.mp4,a video,{'A' if levels[a] > levels[b] else 'B'}")
        return "path_A,path_B,prompt,brightness\n" + "\n".join(lines) + "\n"

    (root / "train.csv").write_text(pairs(range(30), 160, 1))
    (root / "val.csv").write_text(pairs(range(30, 40), 30, 2))
    return root / "train.csv", root / "val.csv"


@pytest.mark.slow
def test_it_learns_a_visible_property(tmp_path):
    """From random initialisation, a one-dimension model ("brightness", a data-driven dimension with the
    generic template) reaches >= 0.9 held-out accuracy without ties in 40 steps of 4 pairs."""
    train, val = _brightness_set(tmp_path)
    out = tmp_path / "run"
    _train("--train-csv", train, "--val-csv", val, "--output-dir", out, "--max-steps", "40", "--batch-size", "4",
           "--grad-accum", "1", "--set", "max_pixels=3136", "--set", "warmup_ratio=0", "--set", "eval_every=10",
           "--set", "save_every=0", "--set", "trainable.learning_rate=3e-3", "--set", "trainable.vision_lr=3e-3",
           "--set", "trainable.merger_lr=3e-3", "--set", "trainable.special_token_lr=3e-3")
    final = [r for r in _metrics(out) if r.get("final")][0]["eval"]["brightness"]
    assert final["pairs"] == 30
    assert final["accuracy_without_ties"] >= 0.9, _metrics(out)
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["reward"]["dims"] == ["brightness"] and config["reward"]["template_type"] == "generic"


def test_trains_on_relabels_pairs_jsonl_and_guards_its_output_folder(example, tmp_path, cli):
    """relabel's output is train-reward's input (one reader for every pair file): 12 rows of example.csv give 12
    pairs with VQ/MQ/TA labels (chosen = A). A second run into the same folder is refused (exit 2, one line naming
    --resume and --overwrite); --overwrite replaces the run."""
    pairs = tmp_path / "pairs.jsonl"
    relabel = cli.invoke("relabel", example, "--recipe", REPO / "recipes" / "debug" / "relabel.yaml",
                         "--output", pairs)
    assert relabel.exit_code == 0, relabel.output
    out = tmp_path / "from_jsonl"
    args = ("--train-csv", pairs, "--output-dir", out, "--max-steps", "1", "--set", "save_every=0",
            "--set", "eval_every=0")
    result = _train(*args)
    assert "12 training pairs (0 skipped" in result.output and "dims VQ,MQ,TA" in result.output
    assert (out / "final" / "model.safetensors").is_file() and len(_metrics(out)) == 1
    again = runner.invoke(app, ["train-reward", "--recipe", str(RECIPE), *map(str, args)])
    assert again.exit_code == 2
    (line,) = [x for x in again.output.splitlines() if x.startswith("error:")]
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    _train(*args, "--overwrite")
    assert len(_metrics(out)) == 1  # replaced, not appended
