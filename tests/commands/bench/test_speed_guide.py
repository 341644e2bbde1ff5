"""`videoalign bench speed guide` through the real CLI: guided against unguided Flow-NRG steps, and where the
gradient flows."""

from __future__ import annotations

import json

import numpy as np


def test_bench_speed_guide_tiny(cli, tmp_path):
    """Finite ratio; the gradient runs through the reward model's blocks only: no transformer block backward, the
    same transformer forwards per step with and without guidance, no parameter grads."""
    out = tmp_path / "bench_guide.json"
    result = cli.invoke("bench", "speed", "guide", "--model", "tiny-random", "--steps", 4, "--repeats", 2,
                        "--output", out)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert np.isfinite(figures["time_ratio"]) and figures["time_ratio"] > 0
    guided, unguided = figures["guided"], figures["unguided"]
    assert guided["transformer_block_backwards"] == unguided["transformer_block_backwards"] == 0
    assert guided["transformer_forwards_per_step"] == unguided["transformer_forwards_per_step"]
    assert figures["k"] == 4 and figures["transformer_blocks"] == 30  # tiny width at the real depth
    assert guided["reward_forwards"] == 3  # steps 2..4 are guided
    assert guided["reward_block_backwards"] == 3 * figures["k"]
    assert unguided["reward_forwards"] == 0 and figures["parameter_grads"] == 0
    assert figures["target_ratio"] == 1.5 and "meets_target" in figures


def test_bench_speed_guide_depth_options(cli, tmp_path):
    """tiny-random's own 2 blocks can be timed (k = 1); num_layers belongs to tiny-random only, k <= num_layers."""
    out = tmp_path / "two.json"
    result = cli.invoke("bench", "speed", "guide", "--num-layers", 2, "--k", 1, "--steps", 3, "--repeats", 2,
                        "--output", out)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["transformer_blocks"] == 2 and figures["guided"]["reward_block_backwards"] == 2
    result = cli.invoke("bench", "speed", "guide", "--num-layers", 2, "--k", 3)
    assert result.exit_code == 2 and "k = 3 is larger than the transformer's 2 blocks" in result.output
    result = cli.invoke("bench", "speed", "guide", "--model", "wan2.1-1.3b-random", "--num-layers", 8)
    assert result.exit_code == 2 and "num_layers applies to tiny-random only" in result.output
