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
    recipe = cli.repo / "recipes" / "debug" / "bench.yaml"
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


def test_bench_speed_relabel_and_train_reward(shared_data, tmp_path):
    """Both benches run through the CLI on the shared example pairs and write consistent JSON figures."""
    from typer.testing import CliRunner

    from videoalign.cli import app

    runner = CliRunner()
    pairs = shared_data / "videoalign_examples" / "example.csv"
    result = runner.invoke(app, ["bench", "speed", "relabel", "--input", str(pairs), "--model", "tiny-random",
                                 "--output", str(tmp_path / "relabel.json")])
    assert result.exit_code == 0, result.output
    relabel = json.loads((tmp_path / "relabel.json").read_text())
    assert (relabel["videos"], relabel["pairs"], relabel["failed"]) == (6, 3, 0)
    assert relabel["pairs_per_s"] == pytest.approx(3 / relabel["total_s"], rel=0.02)
    result = runner.invoke(app, ["bench", "speed", "train-reward", "--train-csv", str(pairs), "--steps", "3",
                                 "--output", str(tmp_path / "train.json")])
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "train.json").read_text())
    assert train["steps_timed"] == 2 and train["pairs_per_step"] == 2
    assert train["pairs_per_s"] == pytest.approx(2 / train["step_s"], rel=0.02)
    assert train["peak_rss_mb"] > 0


# --- bench speed dpo ---------------------------------------------------------------------------------------


def test_bench_speed_dpo_debug_recipe(tmp_path, cli):
    """Both variants run through the CLI on the debug recipe; the figures are finite, positive and consistent."""
    import math

    import yaml

    recipe = cli.repo / "recipes" / "debug" / "bench_speed_dpo.yaml"
    out = tmp_path / "dpo.json"
    result = cli.invoke("bench", "speed", "dpo", "--recipe", recipe, "--steps", "2", "--output", out)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures == _figures(result)
    wanted = yaml.safe_load(recipe.read_text())
    assert figures["benchmark"] == "speed/dpo" and figures["steps_timed"] == 2  # the flag won over the recipe
    for key in ("model", "num_frames", "height", "width", "batch_size", "dtype", "device", "gradient_checkpointing",
                "lora_rank"):
        assert figures[key] == wanted[key], key
    assert figures["latent_shape"] == [1, 16, 3, 4, 4] and figures["text_shape"][:2] == [1, 32]
    for side, forwards in (("ours", 2), ("naive", 4)):
        sub = figures[side]
        assert sub["forwards_per_step"] == forwards
        for key in ("step_s", "step_s_min", "peak_mb", "weights_mb"):
            assert math.isfinite(sub[key]) and sub[key] > 0, (side, key)
        assert sub["peak_mb"] > sub["weights_mb"]  # activations, grads and AdamW state on top of the weights
        assert sub["first_loss"] == pytest.approx(math.log(2), abs=1e-6)  # LoRA B = 0: policy = reference
    # naive holds a full frozen copy of the base transformer besides the LoRA model
    assert figures["naive"]["weights_mb"] == pytest.approx(2 * figures["ours"]["weights_mb"], rel=0.15)
    for ratio, (num, den) in (("time_ratio", ("step_s", "step_s")), ("memory_ratio", ("peak_mb", "peak_mb"))):
        assert math.isfinite(figures[ratio]) and figures[ratio] > 0
        assert figures[ratio] == pytest.approx(figures["ours"][num] / figures["naive"][den], rel=1e-3, abs=1e-4)
    assert figures["targets"] == {"time_ratio": 0.9, "memory_ratio": 0.6}
    assert figures["meets_targets"] == (figures["time_ratio"] <= 0.9 and figures["memory_ratio"] <= 0.6)
    assert figures["memory_method"] and figures["lora_params"] > 0


def test_bench_speed_dpo_bad_input_exits_2(tmp_path, cli):
    result = cli.invoke("bench", "speed", "dpo", "--num-frames", "8", "--output", tmp_path / "x.json")
    assert result.exit_code == 2, result.output
    (line,) = cli.error_lines(result.output)
    assert "num_frames" in line and "9" in line
    assert not (tmp_path / "x.json").exists()


def test_bench_dpo_ours_and_naive_compute_the_same_loss():
    """Apples to apples: with the same non-zero LoRA weights, inputs, t and noise, our dpo_step (one concatenated
    forward, adapter-off reference) and the pseudo-code's four forwards with a frozen copy give the same loss,
    stats and LoRA gradients."""
    import torch

    from videoalign.commands.bench import speed_dpo as bench_dpo

    cfg = bench_dpo.SpeedDpoConfig(batch_size=2, beta=500.0)
    template = bench_dpo.build_template(cfg, "float32")
    inputs = bench_dpo.make_inputs(cfg, template, torch.device("cpu"))
    results = {}
    for name in ("ours", "naive"):
        variant = bench_dpo.build_variant(name, template, cfg, torch.device("cpu"))
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for pname, p in sorted(variant.gen.transformer.named_parameters()):
                if "lora_B" in pname:  # B = 0 at init would make policy == reference and the loss ln 2
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
        loss, stats = bench_dpo.LOSSES[name](variant, inputs)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in variant.gen.transformer.named_parameters() if p.requires_grad}
        results[name] = (loss.item(), stats, grads)
    (loss_o, stats_o, grads_o), (loss_n, stats_n, grads_n) = results["ours"], results["naive"]
    assert abs(loss_o - 0.693147) > 1e-3  # the comparison is not the trivial ln 2
    assert loss_o == pytest.approx(loss_n, abs=1e-5)
    for key in ("policy_chosen_err", "policy_rejected_err", "ref_chosen_err", "ref_rejected_err", "inside"):
        torch.testing.assert_close(stats_o[key], stats_n[key], rtol=1e-5, atol=1e-5)
    assert grads_o.keys() == grads_n.keys() and grads_o
    for name in grads_o:
        torch.testing.assert_close(grads_o[name], grads_n[name], rtol=1e-4, atol=1e-6)
