"""trainer.py and log.MetricsLog: the output-folder guard, data order, and metrics.jsonl on resume."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from videoalign.log import MetricsLog
from videoalign.trainer import RUN_OUTPUTS, TrainingConfig, check_output_dir, step_indices

ACC = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)


def _run_folder(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (root / "checkpoints" / "step-4").mkdir(parents=True)
    (root / "final").mkdir()
    (root / "cache" / "videos").mkdir(parents=True)
    (root / "cache" / "videos" / "x.safetensors").write_bytes(b"latents")
    return root


def test_a_folder_with_a_run_is_refused_unless_resume_or_overwrite(tmp_path):
    out = _run_folder(tmp_path / "run")
    with pytest.raises(ValueError, match=r"already holds a run \(metrics.jsonl, checkpoints, final\); pass --resume"):
        check_output_dir(TrainingConfig(output_dir=str(out)), ACC)
    check_output_dir(TrainingConfig(output_dir=str(out), resume=True), ACC)  # continue it: nothing deleted
    assert (out / "checkpoints" / "step-4").is_dir() and (out / "metrics.jsonl").is_file()


def test_overwrite_deletes_the_run_but_keeps_the_latent_cache(tmp_path):
    out = _run_folder(tmp_path / "run")
    (out / "resolved_recipe.yaml").write_text("x: 1\n")
    check_output_dir(TrainingConfig(output_dir=str(out), overwrite=True), ACC)
    assert not any((out / name).exists() for name in RUN_OUTPUTS)
    assert (out / "cache" / "videos" / "x.safetensors").read_bytes() == b"latents"


def test_output_dir_that_is_a_file_and_resume_with_overwrite_are_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_output_dir(TrainingConfig(output_dir=str(tmp_path / "f")), ACC)
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        TrainingConfig(resume=True, overwrite=True)


def test_a_new_folder_is_created(tmp_path):
    check_output_dir(TrainingConfig(output_dir=str(tmp_path / "a" / "b")), ACC)
    assert (tmp_path / "a" / "b").is_dir()


def test_step_indices_is_a_function_of_seed_and_step():
    """n = 5, global batch 2: 2 steps per epoch (the fifth item dropped), epoch e permuted by seed + e."""
    first = [step_indices(s, 5, 2, seed=7) for s in range(4)]
    assert all(len(b) == 2 for b in first)
    assert len(set(first[0] + first[1])) == 4 and len(set(first[2] + first[3])) == 4
    assert first == [step_indices(s, 5, 2, seed=7) for s in range(4)]  # no hidden state
    assert first != [step_indices(s, 5, 2, seed=8) for s in range(4)]


def test_metrics_log_is_cut_back_to_the_resumed_step(tmp_path):
    """Steps 1-3 and a final record were logged; a run resuming at step 2 keeps steps 1-2 only, so step 3 is not
    logged twice and the final record is written once, at the real end."""
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"time": 1, "step": 1, "loss": 0.7}, {"time": 2, "step": 2, "loss": 0.6}, {"time": 3, "step": 3, "loss": 0.5},
        {"time": 4, "step": 3, "final": True, "eval": {}}]))
    log = MetricsLog(path, start_step=2)
    assert [r["step"] for r in map(json.loads, path.read_text().splitlines())] == [1, 2]
    log.write({"step": 3, "loss": float("nan"), "lr": float("inf")})
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["step"] == 3 and last["loss"] is None and last["lr"] is None  # strict JSON: no NaN, no Infinity
    assert list(last)[0] == "time"
    MetricsLog(path, start_step=0)
    assert path.read_text() == ""  # a run starting over starts an empty file
    MetricsLog(tmp_path / "other.jsonl", start_step=0, enabled=False)  # rank > 0 touches nothing
    assert not (tmp_path / "other.jsonl").exists()
