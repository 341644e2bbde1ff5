"""`videoalign relabel` end to end through the CLI, on tiny-random and small synthetic clips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from videoalign.cli import app
from videoalign.video import write_video

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _clip(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, size=(8, 56, 56, 3), dtype=np.uint8)  # 8 frames at 4 fps -> 4 sampled
    return write_video(path, frames, fps=4.0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("relabel_clips")
    for i in range(7):
        _clip(root / "videos" / f"v{i}.mp4", seed=i)
    return root


def _manifest(root: Path, rows: list[tuple[str, str, str]], name="manifest.csv") -> Path:
    lines = ["prompt,video,group"] + [f"{p},{v},{g}" for p, v, g in rows]
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


ROWS = [("a cat", "videos/v0.mp4", "g1"), ("a cat", "videos/v1.mp4", "g1"), ("a cat", "videos/v2.mp4", "g1"),
        ("a dog", "videos/v3.mp4", "g2"), ("a dog", "videos/v4.mp4", "g2"), ("a bird", "videos/v5.mp4", "g3")]


def _run(*args):
    result = runner.invoke(app, ["relabel", *map(str, args), "--model", "tiny-random"])
    return result


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_manifest_all_pairs_and_best_worst(clips, tmp_path):
    manifest = _manifest(clips, ROWS)
    out_all = tmp_path / "all.jsonl"
    result = _run(manifest, "--output", out_all, "--scores", tmp_path / "cache.jsonl")
    assert result.exit_code == 0, result.output
    pairs = _read(out_all)
    # g1 has 3 videos -> 3 pairs, g2 has 2 -> 1 pair, g3 has 1 -> none
    assert len(pairs) == 4
    assert sorted(p["group"] for p in pairs) == ["g1", "g1", "g1", "g2"]
    for p in pairs:
        assert p["margin"] >= 0
        assert set(p["labels"]) == {"VQ", "MQ", "TA", "reward"}
        assert Path(p["chosen"]).is_absolute() and Path(p["chosen"]).exists()
        r = {side: sum(p["scores"][side].values()) / 3 for side in ("chosen", "rejected")}
        assert p["margin"] == pytest.approx(r["chosen"] - r["rejected"])
    assert (tmp_path / "all.jsonl.margins.png").stat().st_size > 1000
    assert "groups with one video: 1" in result.output

    out_bw = tmp_path / "bw.jsonl"
    result = _run(manifest, "--output", out_bw, "--scores", tmp_path / "cache.jsonl", "--pairing", "best-worst")
    assert result.exit_code == 0, result.output
    assert "6 already scored, 0 to score" in result.output  # the cache is reused, nothing rescored
    best_worst = _read(out_bw)
    assert len(best_worst) == 2
    g1 = [p for p in pairs if p["group"] == "g1"]
    widest = max(g1, key=lambda p: p["margin"])  # best vs worst has the largest margin of the group
    (bw_g1,) = [p for p in best_worst if p["group"] == "g1"]
    assert (bw_g1["chosen"], bw_g1["rejected"]) == (widest["chosen"], widest["rejected"])


def test_ties_weights_and_min_margin(clips, tmp_path):
    manifest = _manifest(clips, ROWS)
    cache = tmp_path / "cache.jsonl"
    ties = tmp_path / "ties.jsonl"
    assert _run(manifest, "--output", ties, "--scores", cache, "--tie-threshold", "1e9").exit_code == 0
    assert all(set(p["labels"].values()) == {"tie"} for p in _read(ties))

    ta = tmp_path / "ta.jsonl"
    assert _run(manifest, "--output", ta, "--scores", cache, "--weights", "0:0:1").exit_code == 0
    for p in _read(ta):
        assert p["margin"] == pytest.approx(p["scores"]["chosen"]["TA"] - p["scores"]["rejected"]["TA"])
        assert p["labels"]["TA"] in ("chosen", "tie")

    margins = sorted(p["margin"] for p in _read(ta))
    cut = (margins[1] + margins[2]) / 2
    kept = tmp_path / "kept.jsonl"
    result = _run(manifest, "--output", kept, "--scores", cache, "--weights", "0:0:1", "--min-margin", cut)
    assert result.exit_code == 0
    assert len(_read(kept)) == len(margins) - 2
    assert "dropped under --min-margin" in result.output and ": 2;" in result.output


def test_pair_csv_gives_one_pair_per_row(shared_data, tmp_path):
    """example.csv lists its 3 pairs four times: every row is a pair, as in every reader (labels.py), so 12 pairs,
    rows 2..13, and a repeated row gives the same pair as its first occurrence."""
    out = tmp_path / "pairs.jsonl"
    result = _run(shared_data / "videoalign_examples" / "example.csv", "--output", out)
    assert result.exit_code == 0, result.output
    pairs = _read(out)
    assert [p["row"] for p in pairs] == list(range(2, 14))
    assert all(pairs[i] | {"row": 0} == pairs[i % 3] | {"row": 0} for i in range(12))
    for p in pairs:
        assert {Path(p["chosen"]).name[:9], Path(p["rejected"]).name[:9]} == {Path(p["chosen"]).name[:9]}


def test_jsonl_manifest_from_stdin_to_stdout(clips, tmp_path, monkeypatch):
    monkeypatch.chdir(clips)
    lines = "\n".join(json.dumps({"prompt": p, "video": v}) for p, v, _ in ROWS[:3])
    result = runner.invoke(app, ["relabel", "-", "--output", "-", "--model", "tiny-random",
                                 "--scores", str(tmp_path / "c.jsonl")], input=lines + "\n")
    assert result.exit_code == 0, result.output
    pairs = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert len(pairs) == 3 and all(p["group"] == "a cat" for p in pairs)  # no group column: grouped by prompt


def test_bad_rows_are_recorded_and_exit_1(clips, tmp_path):
    (clips / "videos" / "broken.mp4").write_bytes(b"not a video at all")
    rows = ROWS[:2] + [("a cat", "videos/missing.mp4", "g1"), ("a cat", "videos/broken.mp4", "g1"), ("", "videos/v6.mp4", "g1")]
    manifest = _manifest(clips, rows, name="bad.csv")
    out = tmp_path / "out.jsonl"
    result = _run(manifest, "--output", out)
    assert result.exit_code == 1, result.output
    lines = _read(out)
    pairs = [x for x in lines if "chosen" in x]
    errors = [x["error"] for x in lines if "error" in x]
    assert len(pairs) == 1
    assert any("missing.mp4" in e for e in errors)
    assert any("broken.mp4" in e for e in errors)
    assert any("row 6" in e and "empty prompt" in e for e in errors)


def test_bad_input_columns_exit_2(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("clip,text\na.mp4,hello\n")
    result = _run(bad, "--output", tmp_path / "o.jsonl")
    assert result.exit_code == 2
    assert "x.csv" in result.output and "prompt,video" in result.output


def _cli(*args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "videoalign", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_resume_after_kill_loses_and_duplicates_nothing(clips, tmp_path):
    rows = [("p%d" % (i // 2), f"videos/v{i}.mp4", f"g{i // 2}") for i in range(6)]
    manifest = _manifest(clips, rows, name="kill.csv")
    out = tmp_path / "pairs.jsonl"
    args = ["relabel", manifest, "--output", out, "--model", "tiny-random", "--batch-size", "1", "--num-workers", "1"]
    proc = _cli(*args)
    part = Path(str(out) + ".scores.jsonl.parts") / "rank0.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if part.is_file() and part.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the job finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # the pairs file is written only when complete
    done_before = part.read_text().count("\n")
    proc = _cli(*args)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert f"{done_before} already scored" in log.replace("\n", " ")
    pairs = _read(out)
    assert len(pairs) == 3 and len({(p["chosen"], p["rejected"]) for p in pairs}) == 3
    cache = _read(Path(str(out) + ".scores.jsonl"))
    assert len(cache) == 6 and len({r["path"] for r in cache}) == 6


@pytest.mark.multiprocess
def test_two_processes_equal_one(clips, tmp_path):
    manifest = _manifest(clips, ROWS)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert _run(manifest, "--output", one, "--dtype", "float32", "--batch-size", "2").exit_code == 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = ["accelerate", "launch", "--num_processes", "2", "--cpu", "-m", "videoalign", "relabel", str(manifest),
           "--output", str(two), "--model", "tiny-random", "--dtype", "float32", "--batch-size", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "on 2 process(es)" in proc.stdout + proc.stderr
    a, b = _read(one), _read(two)
    assert [(p["chosen"], p["rejected"]) for p in a] == [(p["chosen"], p["rejected"]) for p in b]
    for p, q in zip(a, b):
        assert p["labels"] == q["labels"]
        assert p["margin"] == pytest.approx(q["margin"], abs=1e-5)
