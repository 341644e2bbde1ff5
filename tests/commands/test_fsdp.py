"""`videoalign dpo` full fine-tuning under FSDP2 on 2 CPU processes (recipes/accelerate/fsdp_cpu_debug.yaml).

FSDP2 shards the transformer's parameters, gradients, optimiser state and EMA over the ranks (DTensors), so the
checkpoints and the export must gather every rank's shards, and resume must cut the saved whole tensors back into
shards. The reference is a 1-process run of the same recipe: its global batch is the same (1 x 2 accumulation
steps == 2 ranks x 1), so the numbers agree to float reassociation, as for DDP in test_dpo.py (the reduce-scatter
sums in another order; beta = 5000 amplifies 1e-7 in the errors to ~1e-4 in the loss).

The distributed helpers return plain tensors untouched, so one process and DDP write what they wrote before.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "debug" / "dpo.yaml"
FSDP_CPU = REPO / "recipes" / "accelerate" / "fsdp_cpu_debug.yaml"
#: full fine-tuning with an EMA (exported instead of the live weights); checkpoints at steps 2 and 4
FULL = ["--set", "lora.enabled=false", "--lr", "1e-4", "--set", "ema_decay=0.5"]


def _losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_close(a: dict, b: dict, atol: float):
    assert sorted(a) == sorted(b)
    for k, x in a.items():
        assert x.dtype == b[k].dtype and x.shape == b[k].shape, k
        torch.testing.assert_close(x, b[k], atol=atol, rtol=0, msg=k)


@pytest.fixture(scope="module")
def one_process(cli, pair_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp") / "one"
    result = cli.invoke("dpo", "--recipe", RECIPE, "--data", pair_file, "--output-dir", out, *FULL)
    assert result.exit_code == 0, result.output
    return out


def test_distributed_helpers_leave_plain_tensors_alone():
    """One process and DDP: the 'gathered' state is the live state, so checkpoints and exports are unchanged."""
    from videoalign.distributed import full_optimizer_state, full_tensors, shard_like

    layer = torch.nn.Linear(3, 2)
    params = dict(layer.named_parameters())
    optimizer = torch.optim.AdamW(layer.parameters())
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    assert full_tensors(params, main=True) is params and full_tensors(params, main=False) is params
    state = full_optimizer_state(optimizer, main=True)
    assert state["state"][0]["exp_avg"] is optimizer.state[layer.weight]["exp_avg"]
    whole = torch.zeros(2, 3)
    assert shard_like(whole, layer.weight) is whole


@pytest.mark.multiprocess
def test_fsdp_full_fine_tuning_equals_one_process_and_resumes(cli, pair_file, one_process, tmp_path):
    out = tmp_path / "fsdp"
    cmd = ["accelerate", "launch", "--config_file", str(FSDP_CPU), "-m", "videoalign", "dpo", "--recipe", str(RECIPE),
           "--data", str(pair_file), "--output-dir", str(out), "--grad-accum", "1", "--set",
           f"cache_dir={one_process / 'cache'}", *FULL]
    # 1. Steps 1-3, with validation samples between steps 2 and 3 (forwards without a backward, under the EMA
    # weights: the next step must not see them); then a resume from the step-2 checkpoint, which holds every
    # rank's shards gathered, for steps 3-4.
    for args, expect in ((["--max-steps", "3"], "(FSDP2)"), (["--resume"], "at step 2")):
        proc = subprocess.run([*cmd, *args], cwd=REPO, env=cli.env(), capture_output=True, text=True, timeout=600,
                              check=False)
        logs = proc.stdout + proc.stderr
        assert proc.returncode == 0, logs[-6000:]
        assert expect in logs and "on 2 process(es)" in logs
    # 2. Per-step losses, and the checkpoints: weights, Adam moments and EMA in the one-process layout.
    one = _losses(one_process)
    # steps 1, 2, 3, then 3 and 4 resumed: metrics.jsonl was cut back to the checkpoint's step 2 on resume
    assert _losses(out) == pytest.approx(one, abs=1e-3)
    for step in (2, 4):
        ours, ref = out / "checkpoints" / f"step-{step}", one_process / "checkpoints" / f"step-{step}"
        for name in ("trainable.safetensors", "extra.safetensors"):
            _assert_close(load_file(str(ours / name)), load_file(str(ref / name)), atol=1e-5)
        a, b = (torch.load(d / "optimizer.pt", weights_only=True) for d in (ours, ref))
        assert a["param_groups"] == b["param_groups"] and sorted(a["state"]) == sorted(b["state"])
        for i in a["state"]:
            _assert_close(a["state"][i], b["state"][i], atol=1e-5)
    # 3. The exported transformer (EMA weights): gathered from both ranks, written once, as one process does.
    final, ref = out / "final" / "transformer", one_process / "final" / "transformer"
    assert json.loads((final / "config.json").read_text()) == json.loads((ref / "config.json").read_text())
    _assert_close(*(load_file(str(d / "diffusion_pytorch_model.safetensors")) for d in (final, ref)), atol=1e-5)
    # every rank sampled (the sharded forward is a collective); rank 0 wrote the videos
    assert len(list((out / "samples" / "final").glob("*.mp4"))) == 1
