"""`videoalign bench speed score` end to end through the real CLI, on tiny-random and synthetic clips."""

from __future__ import annotations

import json

import pytest

FIGURES = ("clips", "clips_per_s", "score_s", "decode_resize_s", "score_over_decode", "peak_rss_mb")


@pytest.fixture(scope="module")
def bench_csv(clip_dir, cli):
    return cli.write_csv(clip_dir / "bench.csv", [(f"videos/c{i}.mp4", cli.prompts[i]) for i in range(4)])


def _figures(result) -> dict:
    """The JSON document bench prints on stdout (logs go to stderr)."""
    return json.loads(result.stdout)


def test_bench_speed_score(bench_csv, tmp_path, cli):
    out = tmp_path / "bench.json"
    result = cli.invoke("bench", "speed", "score", "--csv", bench_csv, "--model", "tiny-random", "--output", out,
                        "--batch-size", "2", "--num-workers", "1")
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures == _figures(result)  # the file and the printed figures agree
    assert set(FIGURES) <= set(figures)
    assert figures["benchmark"] == "speed/score" and figures["model"] == "tiny-random"
    assert figures["clips"] == 4 and figures["scored"] == 4 and figures["failed"] == 0
    assert figures["batch_size"] == 2 and figures["num_workers"] == 1
    assert figures["score_s"] > 0 and figures["decode_resize_s"] > 0
    assert figures["clips_per_s"] > 0 and figures["peak_rss_mb"] > 0
    # clips_per_s = clips / score_s and score_over_decode = score_s / decode_resize_s (rounded to 3 places;
    # the rounded inputs make the ratios differ in the third digit at most)
    assert figures["clips_per_s"] == pytest.approx(4 / figures["score_s"], rel=0.02, abs=2e-3)
    assert figures["score_over_decode"] == pytest.approx(figures["score_s"] / figures["decode_resize_s"], rel=0.05,
                                                         abs=2e-3)


def test_bench_debug_recipe_with_flag_override(bench_csv, tmp_path, cli):
    recipe = cli.repo / "recipes" / "debug" / "bench_speed_score.yaml"
    if not recipe.is_file():
        pytest.skip(f"{recipe} does not exist yet")
    out = tmp_path / "bench.json"
    # The recipe points at the shared examples; --csv overrides it with the fast synthetic clips.
    result = cli.invoke("bench", "speed", "score", "--recipe", recipe, "--csv", bench_csv, "--output", out)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    import yaml

    wanted = yaml.safe_load(recipe.read_text())
    assert figures["clips"] == 4  # the flag won over the recipe's csv
    for key in ("model", "batch_size", "num_workers"):
        if key in wanted:
            assert figures[key] == wanted[key], key
    if wanted.get("dtype") not in (None, "auto"):
        assert figures["dtype"] == wanted["dtype"]
    if wanted.get("device") not in (None, "auto"):
        assert figures["device"] == wanted["device"]


def test_bench_errors_exit_2(tmp_path, cli):
    out = tmp_path / "bench.json"
    result = cli.invoke("bench", "speed", "score", "--csv", tmp_path / "nope.csv", "--model", "tiny-random",
                        "--output", out)
    assert result.exit_code == 2, result.output
    (line,) = cli.error_lines(result.output)
    assert "nope.csv" in line
    result = cli.invoke("bench", "speed", "score", "--model", "tiny-random", "--set", "batchsize=2")
    assert result.exit_code == 2, result.output
    (line,) = cli.error_lines(result.output)
    assert "batchsize" in line
    assert not out.exists()


def test_bench_bad_clip_outcome_does_not_depend_on_its_position(clip_dir, tmp_path, cli):
    rows = [(f"videos/c{i}.mp4", cli.prompts[i]) for i in range(3)]
    missing = ("videos/missing.mp4", "nothing here")
    outcomes = []
    for name, ordered in (("first", [missing, *rows]), ("later", [*rows[:2], missing, rows[2]])):
        csv_path = cli.write_csv(clip_dir / f"bench_bad_{name}.csv", ordered)
        result = cli.invoke("bench", "speed", "score", "--csv", csv_path, "--model", "tiny-random",
                            "--output", tmp_path / f"{name}.json")
        outcomes.append(result.exit_code)
        if result.exit_code == 0:
            figures = _figures(result)
            assert figures["scored"] == 3 and figures["failed"] == 1
            # throughput of scored clips only, to the rounding of score_s
            assert figures["clips_per_s"] == pytest.approx(3 / figures["score_s"], rel=0.02, abs=2e-3)
    assert outcomes[0] == outcomes[1], outcomes
