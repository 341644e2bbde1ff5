"""`videoalign bench speed train-reward` through the real CLI on the shared example pairs."""

from __future__ import annotations

import json

import pytest


def test_bench_speed_train_reward(shared_data, tmp_path):
    """Three steps of 2 pairs, the first untimed; pairs/s is consistent with the step time."""
    from typer.testing import CliRunner

    from videoalign.cli import app

    runner = CliRunner()
    pairs = shared_data / "videoalign_examples" / "example.csv"
    result = runner.invoke(app, ["bench", "speed", "train-reward", "--train-csv", str(pairs), "--steps", "3",
                                 "--output", str(tmp_path / "train.json")])
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "train.json").read_text())
    assert train["steps_timed"] == 2 and train["pairs_per_step"] == 2
    assert train["pairs_per_s"] == pytest.approx(2 / train["step_s"], rel=0.02)
    assert train["peak_rss_mb"] > 0


