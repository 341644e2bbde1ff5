"""`videoalign bench speed dpo` through the real CLI on its debug recipe, and our Flow-DPO step against the paper
pseudo-code's on the same inputs."""

from __future__ import annotations

import json

import pytest


def _figures(result) -> dict:
    """The JSON document bench prints on stdout (logs go to stderr)."""
    return json.loads(result.stdout)


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
    from videoalign.gen.tiny import transformer_only

    cfg = bench_dpo.SpeedDpoConfig(batch_size=2, beta=500.0)
    template = transformer_only(cfg.model, "float32", cfg.seed)
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
    for key in ("policy_chosen_err", "policy_rejected_err", "ref_chosen_err", "ref_rejected_err"):
        torch.testing.assert_close(stats_o[key], stats_n[key], rtol=1e-5, atol=1e-5)
    # inside = -(beta/2) x a difference of errors: their float32 rounding (~1e-6 after the sums) times beta/2 = 250
    # (1e-5 absolute failed on an AMD EPYC machine: 1.2e-4)
    torch.testing.assert_close(stats_o["inside"], stats_n["inside"], rtol=1e-5, atol=1e-6 * cfg.beta)
    assert grads_o.keys() == grads_n.keys() and grads_o
    for name in grads_o:
        # the gradients carry the same beta/2 factor (2.6e-5 against 1e-6 on an AMD EPYC machine)
        torch.testing.assert_close(grads_o[name], grads_n[name], rtol=1e-4, atol=1e-7 * cfg.beta)
