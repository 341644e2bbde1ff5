"""Every command's debug run against its stored outputs (tests/golden/*.json): a refactor must not change a number.

Each case runs one command through the real CLI on the shared example clips (fixed bytes, so the inputs do not
depend on this machine's video encoder), using only `--recipe` and `--set key=value` (config keys outlive flag
names), and reduces its outputs to a digest: score records, pairs, per-step metrics (timestamps dropped), eval
files, guide lines, benchmark figures, and every final tensor (sha256 of its float32 bytes, plus its sum, absolute
sum and first values). Paths become file names.

By default floats are compared with a tolerance (rel 1e-3, abs 1e-5) and the sha256 fields are not compared, so a
machine with other float rounding (another CPU, another BLAS) still passes while a changed computation does not.
`VIDEOALIGN_GOLDEN=exact` compares everything bit for bit (max abs diff 0: what a refactor on the machine that
wrote the goldens must give); `VIDEOALIGN_GOLDEN=update` rewrites the goldens (review the diff: it is the change).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
DEBUG = REPO / "recipes" / "debug"
MODE = os.environ.get("VIDEOALIGN_GOLDEN", "tolerance")
#: keys whose values are machine- or run-dependent: timings, absolute paths, versions, hosts
VOLATILE = {"time", "host", "python", "torch", "torch_threads", "versions", "settings", "load_s"}
RTOL, ATOL = 1e-3, 1e-5

pytestmark = pytest.mark.slow


# -- digests -----------------------------------------------------------------------------------------------------

def _clean(value):
    """JSON data with paths cut to file names and volatile keys dropped."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and (value.startswith("/") or value.endswith((".mp4", ".png", ".safetensors"))):
        return Path(value).name
    return value


def _strict(text: str):
    """json.loads that refuses NaN and Infinity, as strict JSON readers do: every output must be strict JSON."""
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _jsonl(path: Path) -> list:
    return [_clean(_strict(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _json(path: Path):
    return _clean(_strict(path.read_text(encoding="utf-8")))


def _tensors(path: Path) -> dict:
    """{name: {sha256, sum, abs_sum, head}} of a safetensors file (or of every safetensors file under a folder)."""
    import torch
    from safetensors.torch import load_file

    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    out = {}
    for file in files:
        prefix = "" if path.is_file() else f"{file.relative_to(path)}:"
        for name, t in sorted(load_file(str(file)).items()):
            x = t.detach().to(torch.float32).contiguous()
            out[prefix + name] = {"sha256": hashlib.sha256(x.numpy().tobytes()).hexdigest(),
                                  "sum": float(x.double().sum()), "abs_sum": float(x.double().abs().sum()),
                                  "head": [float(v) for v in x.flatten()[:4]]}
    return out


# -- comparison --------------------------------------------------------------------------------------------------

def _compare(expected, actual, where: str, problems: list[str]) -> None:
    if len(problems) > 20:
        return
    if isinstance(expected, dict) and isinstance(actual, dict):
        if sorted(expected) != sorted(actual):
            problems.append(f"{where}: keys {sorted(expected)} != {sorted(actual)}")
            return
        for k in expected:
            if k == "sha256" or k.endswith("_sha1"):
                if MODE == "exact" and expected[k] != actual[k]:
                    problems.append(f"{where}.{k}: {expected[k]} != {actual[k]}")
                continue
            _compare(expected[k], actual[k], f"{where}.{k}", problems)
    elif isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            problems.append(f"{where}: length {len(expected)} != {len(actual)}")
            return
        for i, (e, a) in enumerate(zip(expected, actual)):
            _compare(e, a, f"{where}[{i}]", problems)
    elif isinstance(expected, float) or isinstance(actual, float):
        if not isinstance(expected, (int, float)) or not isinstance(actual, (int, float)) or \
                isinstance(expected, bool) or isinstance(actual, bool):
            problems.append(f"{where}: {expected!r} != {actual!r}")
        elif math.isnan(expected) or math.isnan(actual):
            if not (math.isnan(expected) and math.isnan(actual)):
                problems.append(f"{where}: {expected!r} != {actual!r}")
        elif MODE == "exact":
            if expected != actual:
                problems.append(f"{where}: {expected!r} != {actual!r} (diff {abs(expected - actual):.3g})")
        elif not math.isclose(expected, actual, rel_tol=RTOL, abs_tol=ATOL):
            problems.append(f"{where}: {expected!r} != {actual!r}")
    elif expected != actual:
        problems.append(f"{where}: {expected!r} != {actual!r}")


def check_golden(name: str, digest) -> None:
    path = GOLDEN / f"{name}.json"
    if MODE == "update":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return
    assert path.is_file(), f"{path} missing: run with VIDEOALIGN_GOLDEN=update to write it"
    expected = json.loads(path.read_text(encoding="utf-8"))
    problems: list[str] = []
    _compare(expected, json.loads(json.dumps(digest)), name, problems)
    assert not problems, "outputs changed (mode " + MODE + "):\n" + "\n".join(problems[:20])


# -- inputs ------------------------------------------------------------------------------------------------------

#: fixed scores of six pairs over the six shared clips (relabel's format), for the alignment commands
_PAIRS = [("1_A", "1_B"), ("2_A", "2_B"), ("3_A", "3_B"), ("1_B", "2_A"), ("2_B", "3_A"), ("3_B", "1_A")]
_PROMPTS = ["a girl sits on a chair", "an explorer in a building", "an astronaut on the moon"]


@pytest.fixture(scope="module")
def inputs(shared_data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("golden_inputs")
    videos = shared_data / "videoalign_examples" / "videos"
    lines = []
    for i, (a, b) in enumerate(_PAIRS):
        scores = {"chosen": {"VQ": 1.0 - 0.1 * i, "MQ": 0.5, "TA": 0.2 * i},
                  "rejected": {"VQ": -0.5, "MQ": 0.5 + 0.05 * i, "TA": 0.1}}
        labels = {d: "chosen" if scores["chosen"][d] > scores["rejected"][d] else
                  "rejected" if scores["chosen"][d] < scores["rejected"][d] else "tie" for d in ("VQ", "MQ", "TA")}
        lines.append({"prompt": _PROMPTS[i % 3], "group": f"g{i}", "chosen": str(videos / f"example_{a}.mp4"),
                      "rejected": str(videos / f"example_{b}.mp4"), "scores": scores, "labels": labels,
                      "weights": {"VQ": 1.0, "MQ": 1.0, "TA": 1.0}})
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    manifest = root / "manifest.csv"
    rows = [f"{videos / f'example_{n}_{s}.mp4'},{_PROMPTS[n - 1]},g{n % 2}" for n in (1, 2, 3) for s in "AB"]
    manifest.write_text("video,prompt,group\n" + "\n".join(rows) + "\n", encoding="utf-8")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(_PROMPTS[:2]) + "\n", encoding="utf-8")
    return {"root": root, "pairs": pairs, "manifest": manifest, "prompts": prompts,
            "example": shared_data / "videoalign_examples" / "example.csv"}


def _run(cli, *args) -> None:
    result = cli.invoke(*args)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("golden_runs")


# -- the cases ---------------------------------------------------------------------------------------------------

def test_score(cli, inputs, runs):
    out = runs / "scores.jsonl"
    _run(cli, "score", "--recipe", DEBUG / "score.yaml", "--set", f"csv={inputs['example']}", "--set", f"output={out}")
    check_golden("score", _jsonl(out))


def test_relabel(cli, inputs, runs):
    out = runs / "relabel.jsonl"
    _run(cli, "relabel", "--recipe", DEBUG / "relabel.yaml", "--set", f"input={inputs['manifest']}",
         "--set", f"output={out}")
    check_golden("relabel", _jsonl(out))


def test_train_reward(cli, inputs, runs):
    out = runs / "train_reward"
    _run(cli, "train-reward", "--recipe", DEBUG / "train_reward.yaml", "--set", f"train_csv={inputs['example']}",
         "--set", f"val_csv={inputs['example']}", "--set", f"output_dir={out}")
    check_golden("train_reward", {"metrics": _jsonl(out / "metrics.jsonl"), "final": _tensors(out / "final"),
                                  "config": _json(out / "final" / "config.json")})


@pytest.fixture(scope="module")
def dpo_run(cli, inputs, runs) -> Path:
    out = runs / "dpo"
    _run(cli, "dpo", "--recipe", DEBUG / "dpo.yaml", "--set", f"data={inputs['pairs']}", "--set", f"output_dir={out}")
    return out


def test_dpo(dpo_run):
    check_golden("dpo", {"metrics": _jsonl(dpo_run / "metrics.jsonl"), "final": _tensors(dpo_run / "final")})


def test_rwr(cli, inputs, runs):
    out = runs / "rwr"
    _run(cli, "rwr", "--recipe", DEBUG / "rwr.yaml", "--set", f"data={inputs['pairs']}", "--set", f"output_dir={out}")
    check_golden("rwr", {"metrics": _jsonl(out / "metrics.jsonl"), "final": _tensors(out / "final")})


@pytest.fixture(scope="module")
def latent_rm_run(cli, inputs, runs) -> Path:
    out = runs / "latent_rm"
    _run(cli, "train-latent-rm", "--recipe", DEBUG / "train_latent_rm.yaml", "--set", f"data={inputs['pairs']}",
         "--set", f"output_dir={out}")
    return out


def test_train_latent_rm(latent_rm_run):
    out = latent_rm_run
    check_golden("train_latent_rm", {"metrics": _jsonl(out / "metrics.jsonl"), "eval": _json(out / "eval.json"),
                                     "final": _tensors(out / "final"), "config": _json(out / "final" / "config.json")})


def test_guide(cli, inputs, runs, latent_rm_run):
    out = runs / "guide"
    _run(cli, "guide", "--recipe", DEBUG / "guide.yaml", "--set", f"prompts={inputs['prompts']}",
         "--set", f"latent_rm={latent_rm_run / 'final'}", "--set", f"output_dir={out}", "--set", "weights=0.2:0.3:0.5")
    check_golden("guide", _jsonl(out / "guide.jsonl"))


def test_bench_reward(cli, inputs, runs):
    out = runs / "bench_reward"
    _run(cli, "bench", "reward", "--recipe", DEBUG / "score.yaml", "--set", f"pairs={inputs['example']}",
         "--set", f"output={out}", "--set", f"json={out}.json")
    check_golden("bench_reward", _json(Path(f"{out}.json")))


def test_bench_winrate(cli, inputs, runs, dpo_run):
    out = runs / "winrate"
    _run(cli, "bench", "winrate", "--recipe", DEBUG / "bench_winrate.yaml", "--set", f"prompts={inputs['prompts']}",
         "--set", f"aligned={dpo_run / 'final'}", "--set", f"output_dir={out}")
    check_golden("bench_winrate", _json(out / "winrate.json"))
