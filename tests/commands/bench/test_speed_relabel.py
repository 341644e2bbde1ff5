"""`videoalign bench speed relabel` through the real CLI on the shared example pairs."""

from __future__ import annotations

import json

import pytest


def test_bench_speed_relabel(shared_data, tmp_path):
    """A cold relabel of the shared example pairs: 6 distinct videos, one pair per row (12 rows), consistent JSON."""
    from typer.testing import CliRunner

    from videoalign.cli import app

    runner = CliRunner()
    pairs = shared_data / "videoalign_examples" / "example.csv"
    result = runner.invoke(app, ["bench", "speed", "relabel", "--input", str(pairs), "--model", "tiny-random",
                                 "--output", str(tmp_path / "relabel.json")])
    assert result.exit_code == 0, result.output
    relabel = json.loads((tmp_path / "relabel.json").read_text())
    assert (relabel["videos"], relabel["pairs"], relabel["failed"]) == (6, 12, 0)
    assert relabel["pairs_per_s"] == pytest.approx(12 / relabel["total_s"], rel=0.02)
