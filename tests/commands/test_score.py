"""`videoalign score` end to end through the real CLI: one clip, CSV batches, errors, resume, parity, 2 ranks.

Most runs go in-process through Typer's CliRunner on `tiny-random` and small synthetic clips (see conftest.py);
subprocesses are used only to kill a job and to launch two ranks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from videoalign.video import write_video

DIMS = ("VQ", "MQ", "TA", "Overall")
ABS = 1e-5  # float32 noise between batch compositions (padding) is ~1e-8 on tiny-random's ~0.1 scores


def _scores_close(a: dict, b: dict, tol: float = ABS) -> bool:
    return all(abs(a[d] - b[d]) <= tol for d in DIMS) and all(abs(a["raw"][d] - b["raw"][d]) <= tol for d in DIMS)


@pytest.fixture(scope="module")
def csv6(clip_dir, cli) -> Path:
    """video,prompt CSV of the six synthetic clips, paths relative to the CSV."""
    return cli.write_csv(clip_dir / "six.csv", [(f"videos/c{i}.mp4", cli.prompts[i]) for i in range(6)])


@pytest.fixture(scope="module")
def baseline(csv6, tmp_path_factory, cli) -> tuple[Path, list[dict]]:
    """One uninterrupted run over the six clips: (output file, records)."""
    out = tmp_path_factory.mktemp("baseline") / "scores.jsonl"
    result = cli.invoke("score", "--csv", csv6, "--output", out, "--model", "tiny-random", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    return out, cli.read_jsonl(out)


# --- 1. one clip -------------------------------------------------------------------------------------------


def test_single_clip_table_and_json(clips, cli):
    clip = clips[0]
    result = cli.invoke("score", clip, "a red car", "--model", "tiny-random", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)  # stdout holds exactly one JSON object (logs go to stderr)
    assert {"video", "prompt", "VQ", "MQ", "TA", "Overall", "raw", "num_frames", "fps", "grid_thw"} <= set(record)
    assert "error" not in record
    assert record["video"] == str(clip) and record["prompt"] == "a red car"
    assert set(record["raw"]) == set(DIMS)
    # tiny-random has no normalisation statistics: the top level is raw and Overall = VQ + MQ + TA.
    assert record["normalized"] is False
    assert all(record[d] == record["raw"][d] for d in DIMS)
    assert record["Overall"] == pytest.approx(record["VQ"] + record["MQ"] + record["TA"])
    # 16 frames at 8 fps = 2 s -> 2 s * 2 fps = 4 frames -> 2 temporal patches. 64x96 is below min_pixels
    # (100352): beta = sqrt(100352 / 6144) = 4.04 -> ceil(64*4.04/28)*28 = 280, ceil(96*4.04/28)*28 = 392,
    # i.e. 20x28 patches of 14 px.
    assert record["num_frames"] == 4 and record["fps"] == 2.0 and record["grid_thw"] == [2, 20, 28]

    table = cli.invoke("score", clip, "a red car", "--model", "tiny-random")
    assert table.exit_code == 0, table.output
    header = next(line for line in table.stdout.splitlines() if "VQ" in line)
    for name in ("video", *DIMS, "frames"):
        assert name in header
    row = next(line for line in table.stdout.splitlines() if clip.name in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    assert cells[0] == clip.name
    assert [float(c) for c in cells[1:5]] == [round(record[d], 4) for d in DIMS]  # same scores as --json
    assert cells[5] == "4"


# --- 2. parity with the reference implementation -----------------------------------------------------------


@pytest.fixture(scope="module")
def parity(shared_data, tmp_path_factory, cli):
    ckpt = shared_data / "videoreward" / "parity" / "tiny_videoreward_full"
    ref = json.loads((shared_data / "videoreward" / "parity" / "reference_scores_full_fp32.json").read_text())
    csv_path = shared_data / "videoalign_examples" / "example.csv"
    out = tmp_path_factory.mktemp("parity") / "out.jsonl"
    result = cli.invoke("score", "--csv", csv_path, "--output", out, "--model", ckpt, "--dtype", "float32",
                        "--batch-size", "6")
    assert result.exit_code == 0, result.output
    return ckpt, {r["video"]: r for r in ref["results"]}, csv_path, out, result.output


def test_parity_with_reference_scores(parity, cli):
    _, ref, _, out, log = parity
    assert "6 videos in" in log and "0 already scored, 6 to score" in log
    records = cli.read_jsonl(out)
    # example.csv lists its 3 pairs 4 times, some spelled ./videos/...: one line per distinct video, in
    # first-seen order (1_A, 1_B, 2_A, ...).
    names = [Path(r["video"]).name for r in records]
    assert names == [f"example_{i}_{s}.mp4" for i in (1, 2, 3) for s in "AB"]
    assert not Path(str(out) + ".parts").exists()
    for r in records:
        expected = ref[Path(r["video"]).name]
        assert r["normalized"] is True and "error" not in r
        assert r["prompt"] == expected["prompt"]
        assert r["grid_thw"] == expected["video_grid_thw"]
        for d in DIMS:
            assert r["raw"][d] == pytest.approx(expected["raw"][d], abs=1e-4), (r["video"], d)
            assert r[d] == pytest.approx(expected["normalized"][d], abs=1e-4), (r["video"], d)


def test_parity_raw_flag(parity, tmp_path, cli):
    ckpt, ref, csv_path, out, _ = parity
    # Raw scores cannot be appended to an output holding normalised ones: refused before the model loads.
    mixed = cli.invoke("score", "--csv", csv_path, "--output", out, "--model", ckpt, "--dtype", "float32", "--raw")
    assert mixed.exit_code == 2, mixed.output
    (line,) = cli.error_lines(mixed.output)
    assert str(out) in line and "raw" in line

    # --raw on the first pair only (two clips; decoding the 720p examples is the slow part).
    rows = [(str(csv_path.parent / "videos" / "example_1_A.mp4"), str(csv_path.parent / "videos" / "example_1_B.mp4"),
             next(iter(ref.values()))["prompt"])]
    pair_csv = cli.write_csv(tmp_path / "pair.csv", rows, header=("path_A", "path_B", "prompt"))
    raw_out = tmp_path / "raw.jsonl"
    result = cli.invoke("score", "--csv", pair_csv, "--output", raw_out, "--model", ckpt, "--dtype", "float32",
                        "--batch-size", "2", "--raw")
    assert result.exit_code == 0, result.output
    records = cli.read_jsonl(raw_out)
    assert [Path(r["video"]).name for r in records] == ["example_1_A.mp4", "example_1_B.mp4"]
    for r in records:
        expected = ref[Path(r["video"]).name]
        assert r["normalized"] is False
        for d in DIMS:
            assert r[d] == pytest.approx(expected["raw"][d], abs=1e-4)
            assert r["raw"][d] == r[d]


# --- 3. one-clip errors: exit 2, one line naming the file --------------------------------------------------


@pytest.fixture(scope="module")
def bad_clips(tmp_path_factory) -> dict[str, Path]:
    import imageio_ffmpeg
    import numpy as np

    root = tmp_path_factory.mktemp("bad_clips")
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    # A valid mp4 container with no frames (ffmpeg started and closed without a frame): no video stream.
    zero = root / "zero_frames.mp4"
    writer = imageio_ffmpeg.write_frames(str(zero), (96, 64), fps=8, codec="libx264", pix_fmt_in="rgb24",
                                         pix_fmt_out="yuv420p", macro_block_size=1, ffmpeg_log_level="quiet")
    writer.send(None)
    writer.close()
    # 2x600: aspect ratio 300 > MAX_RATIO 200 (smart_resize refuses it); libx264 needs even sides.
    wide = write_video(root / "wide_2x600.mp4", np.zeros((4, 2, 600, 3), np.uint8), fps=4.0)
    # 4x800: aspect ratio exactly 200, which is allowed (the check is `> 200`).
    edge = write_video(root / "edge_4x800.mp4", np.full((4, 4, 800, 3), 128, np.uint8), fps=4.0)
    return {"corrupt": corrupt, "empty": empty, "zero": zero, "wide": wide, "edge": edge, "missing": root / "nope.mp4"}


@pytest.mark.parametrize(
    "kind, prompt, words",
    [
        ("missing", "a cat", ["no such video file"]),
        ("corrupt", "a cat", ["cannot decode video"]),
        ("empty", "a cat", ["empty", "0 bytes"]),
        ("zero", "a cat", ["cannot decode video"]),
        ("wide", "a cat", ["aspect ratio 300.0 > 200", "crop"]),
        ("good", "a cat <|TA_reward|> sitting", ["reserved token <|TA_reward|>"]),
        ("good", "<|VQ_reward|>", ["reserved token <|VQ_reward|>"]),
    ],
)
def test_single_clip_errors_exit_2_with_one_line(kind, prompt, words, bad_clips, clips, cli):
    clip = clips[0] if kind == "good" else bad_clips[kind]
    result = cli.invoke("score", clip, prompt, "--model", "tiny-random")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout.strip() == ""
    (line,) = cli.error_lines(result.output)
    assert str(clip) in line
    for word in words:
        assert word in line
    # Nothing else on the console names the file: the message is that one line.
    assert [x for x in result.output.splitlines() if clip.name in x] == [line]


def test_aspect_ratio_exactly_200_is_scored(bad_clips, cli):
    result = cli.invoke("score", bad_clips["edge"], "a line", "--model", "tiny-random", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    # 4x800 -> round to 28x812 (22736 px < min 100352) -> beta = sqrt(100352/3200) = 5.6 ->
    # ceil(4*5.6/28)*28 = 28, ceil(800*5.6/28)*28 = 4480 -> 2x320 patches; 4 frames at 4 fps = 1 s -> 4 sampled
    assert record["grid_thw"] == [2, 2, 320]


@pytest.mark.slow
def test_corrupt_clip_prints_one_line_in_a_real_terminal_session(bad_clips, cli):
    """The in-process runner cannot see native stderr; a subprocess sees what a user sees."""
    clip = bad_clips["corrupt"]
    proc = subprocess.run(cli.python_cli("score", clip, "a cat", "--model", "tiny-random"), check=False,
                          cwd=cli.repo, env=cli.env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    naming = [x for x in (proc.stdout + proc.stderr).splitlines() if clip.name in x]
    assert len(naming) == 1 and naming[0].startswith("error:"), naming


# --- usage errors --------------------------------------------------------------------------------------------


def test_usage_errors_exit_2(csv6, clips, tmp_path, cli):
    out = tmp_path / "o.jsonl"
    cases = [
        (["score", "--csv", csv6, "--output", out, "--set", "batch_sz=4"], ["batch_sz", "unknown config key"]),
        (["score", "--csv", csv6, "--output", out, "--set", "batch_size=many"], ["batch_size", "integer"]),
        (["score", "--csv", csv6, "--output", out, "--set", "dtype=float8"], ["dtype", "float8"]),
        (["score", "--csv", csv6], ["--output"]),
        (["score", clips[0], "a cat", "--csv", csv6, "--output", out], ["not both"]),
        (["score"], ["--csv"]),
        (["score", "--csv", tmp_path / "nope.csv", "--output", out], ["nope.csv", "no such CSV"]),
    ]
    for args, words in cases:
        result = cli.invoke(*args, "--model", "tiny-random")
        assert result.exit_code == 2, (args, result.output)
        (line,) = cli.error_lines(result.output)
        for word in words:
            assert word in line, (args, line)
        assert "Traceback" not in result.output
    assert not out.exists()


def test_csv_without_needed_columns_exit_2(tmp_path, cli):
    bad = cli.write_csv(tmp_path / "clips.csv", [("a.mp4", "a cat")], header=("clip", "text"))
    result = cli.invoke("score", "--csv", bad, "--output", tmp_path / "o.jsonl", "--model", "tiny-random")
    assert result.exit_code == 2, result.output
    (line,) = cli.error_lines(result.output)
    assert str(bad) in line
    assert "video,prompt" in line and "path_A,path_B,prompt" in line and "clip,text" in line
    assert not (tmp_path / "o.jsonl").exists()


# --- 4. batches with bad items ------------------------------------------------------------------------------


def test_batch_with_bad_items_records_errors_in_order_and_exits_1(clips, bad_clips, tmp_path, cli):
    good = cli.link_videos(tmp_path, clips[:3])
    shutil.copy(bad_clips["corrupt"], tmp_path / "videos" / "broken.mp4")
    rows = [(good[0], "a red car"), ("videos/missing.mp4", "a dog"), (good[1], "a cat"),
            ("videos/broken.mp4", "a fish"), (good[2], "a cow <|MQ_reward|>"), (good[2], "seen twice: ignored")]
    csv_path = cli.write_csv(tmp_path / "mixed.csv", rows)
    out = tmp_path / "mixed.jsonl"
    result = cli.invoke("score", "--csv", csv_path, "--output", out, "--model", "tiny-random", "--batch-size", "2")
    assert result.exit_code == 1, result.output
    records = cli.read_jsonl(out)
    assert [r["video"] for r in records] == [good[0], "videos/missing.mp4", good[1], "videos/broken.mp4", good[2]]
    ok = [r for r in records if "error" not in r]
    assert [r["video"] for r in ok] == [good[0], good[1]]
    for r in ok:
        assert all(isinstance(r[d], float) for d in DIMS)
    errors = {r["video"]: r["error"] for r in records if "error" in r}
    assert "missing.mp4" in errors["videos/missing.mp4"] and "not found" in errors["videos/missing.mp4"]
    assert "broken.mp4" in errors["videos/broken.mp4"] and "cannot decode" in errors["videos/broken.mp4"]
    assert "c2.mp4" in errors[good[2]] and "<|MQ_reward|>" in errors[good[2]]
    for r in records:
        if "error" in r:
            assert not any(d in r for d in DIMS)
    assert "wrote 5 records" in result.output and "(3 failed)" in result.output
    assert not Path(str(out) + ".parts").exists()


def test_batch_row_with_empty_video_cell_is_a_failed_item_in_order(clips, tmp_path, cli):
    good = cli.link_videos(tmp_path, clips[:2])
    csv_path = cli.write_csv(tmp_path / "holes.csv", [(good[0], "a red car"), ("", "a dog"), (good[1], "a cat")])
    out = tmp_path / "holes.jsonl"
    result = cli.invoke("score", "--csv", csv_path, "--output", out, "--model", "tiny-random")
    records = cli.read_jsonl(out)
    assert len(records) == 3
    assert "error" in records[1] and "row 3" in records[1]["error"], records
    assert result.exit_code == 1, result.output
    assert "(1 failed)" in result.output


# --- 5. resume ------------------------------------------------------------------------------------------------


def test_rerun_scores_nothing_and_keeps_the_file(baseline, csv6, tmp_path, cli):
    base_out, base_records = baseline
    assert len(base_records) == 6 and all("error" not in r for r in base_records)
    out = tmp_path / "scores.jsonl"
    shutil.copy(base_out, out)
    shutil.copy(str(base_out) + ".config.yaml", str(out) + ".config.yaml")
    before = out.read_bytes()
    result = cli.invoke("score", "--csv", csv6, "--output", out, "--model", "tiny-random", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "6 already scored, 0 to score" in result.output
    assert "meaningless" not in result.output  # the tiny-random model was never even built
    assert out.read_bytes() == before


def test_changed_prompt_is_rescored(baseline, clip_dir, tmp_path, cli):
    base_out, base_records = baseline
    out = tmp_path / "scores.jsonl"
    shutil.copy(base_out, out)
    prompts = [r["prompt"] for r in base_records]
    prompts[3] = "a completely different prompt"  # TA depends on the prompt: the old record is stale
    csv_path = cli.write_csv(clip_dir / "six_changed.csv", [(f"videos/c{i}.mp4", p) for i, p in enumerate(prompts)])
    result = cli.invoke("score", "--csv", csv_path, "--output", out, "--model", "tiny-random", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "5 already scored, 1 to score" in result.output
    records = cli.read_jsonl(out)
    assert [r["prompt"] for r in records] == prompts
    assert records[3]["TA"] != base_records[3]["TA"]
    assert records[:3] == base_records[:3] and records[4:] == base_records[4:]


def _interrupted_parts(out: Path, base_records: list[dict], torn: bool) -> dict:
    """What a job killed after its first batch leaves: `<out>.parts/rank0.jsonl` with c1's record (with a
    sentinel that a recomputation could not produce), optionally followed by a torn half line."""
    sentinel = dict(base_records[1], VQ=12345.0)
    part = Path(str(out) + ".parts") / "rank0.jsonl"
    part.parent.mkdir()
    text = json.dumps(sentinel) + "\n"
    if torn:
        text += json.dumps(base_records[2])[:57]  # the kill landed inside the next append
    part.write_text(text)
    return sentinel


def _check_resumed(result, out: Path, base_records: list[dict], sentinel: dict):
    assert result.exit_code == 0, result.output
    assert "1 already scored, 5 to score" in result.output
    records = read_strict(out)
    assert [r["video"] for r in records] == [r["video"] for r in base_records]  # CSV order, once each
    assert records[1] == sentinel  # reused, not recomputed
    for r, b in zip(records, base_records):
        if r is not records[1]:
            assert _scores_close(r, b)
    assert not Path(str(out) + ".parts").exists()


def read_strict(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_resume_reuses_parts_of_an_interrupted_run(baseline, csv6, tmp_path, cli):
    _, base_records = baseline
    out = tmp_path / "scores.jsonl"
    sentinel = _interrupted_parts(out, base_records, torn=False)
    result = cli.invoke("score", "--csv", csv6, "--output", out, "--model", "tiny-random", "--batch-size", "2")
    _check_resumed(result, out, base_records, sentinel)


def test_resume_after_a_torn_last_line(baseline, csv6, tmp_path, cli):
    """A kill inside an append leaves a torn last line; the next append must not turn it into a corrupt middle
    line (which read_jsonl rejects, failing the merge and every rerun: fixed in d197b14)."""
    _, base_records = baseline
    out = tmp_path / "scores.jsonl"
    sentinel = _interrupted_parts(out, base_records, torn=True)
    result = cli.invoke("score", "--csv", csv6, "--output", out, "--model", "tiny-random", "--batch-size", "2")
    _check_resumed(result, out, base_records, sentinel)


@pytest.mark.slow
def test_resume_after_sigkill(baseline, csv6, tmp_path, cli):
    _, base_records = baseline
    out = tmp_path / "scores.jsonl"
    part = Path(str(out) + ".parts") / "rank0.jsonl"
    args = ["score", "--csv", csv6, "--output", out, "--model", "tiny-random", "--batch-size", "1",
            "--num-workers", "0"]
    proc = subprocess.Popen(cli.python_cli(*args), cwd=cli.repo, env=cli.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if part.is_file() and part.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.01)
        finished = proc.poll() is not None
        if not finished and time.monotonic() >= deadline:
            pytest.fail("no record was written within 180 s:\n" + (proc.stdout.read() if proc.stdout else ""))
        if not finished:
            proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        log, _ = proc.communicate(timeout=60)
    if finished:
        pytest.skip(f"the job finished (rc {proc.returncode}) before it could be killed: nothing to resume")
    assert proc.returncode == -signal.SIGKILL, log
    # No half-written final output: absent (it is renamed into place only when complete) or whole lines.
    if out.exists():
        read_strict(out)
    done = [json.loads(x) for x in part.read_text().split("\n")[:-1]]  # complete lines (torn tail dropped)
    assert 1 <= len(done) < 6, f"{len(done)} records before the kill"
    leftover = [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftover, leftover

    result = cli.invoke(*args)
    assert result.exit_code == 0, result.output
    assert f"{len(done)} already scored, {6 - len(done)} to score" in result.output
    records = read_strict(out)
    assert [r["video"] for r in records] == [f"videos/c{i}.mp4" for i in range(6)]  # each exactly once
    for r, b in zip(records, base_records):
        assert _scores_close(r, b)  # resumed == uninterrupted
    for d in done:  # what the killed job wrote is kept as it was
        assert records[[r["video"] for r in records].index(d["video"])] == d
    assert not part.parent.exists()


# --- 6. failed items are retried ------------------------------------------------------------------------------


def test_failed_item_is_retried_after_the_fix(clips, tmp_path, cli):
    paths = cli.link_videos(tmp_path, [clips[0], clips[2]], names=["c0.mp4", "c2.mp4"])
    rows = [(paths[0], "a red car"), ("videos/late.mp4", "a late clip"), (paths[1], "waves")]
    csv_path = cli.write_csv(tmp_path / "late.csv", rows)
    out = tmp_path / "late.jsonl"
    args = ["score", "--csv", csv_path, "--output", out, "--model", "tiny-random"]
    first = cli.invoke(*args)
    assert first.exit_code == 1, first.output
    records = cli.read_jsonl(out)
    assert "late.mp4" in records[1]["error"]

    (tmp_path / "videos" / "late.mp4").symlink_to(clips[1])  # the missing file arrives
    second = cli.invoke(*args)
    assert second.exit_code == 0, second.output
    assert "2 already scored, 1 to score" in second.output
    fixed = cli.read_jsonl(out)
    assert [r["video"] for r in fixed] == [paths[0], "videos/late.mp4", paths[1]]
    assert all("error" not in r for r in fixed)
    assert fixed[0] == records[0] and fixed[2] == records[2]
    assert isinstance(fixed[1]["Overall"], float)


# --- 7. two processes == one ----------------------------------------------------------------------------------


def _accelerate() -> str:
    exe = Path(sys.executable).parent / "accelerate"
    found = str(exe) if exe.is_file() else shutil.which("accelerate")
    if not found:
        pytest.skip("the accelerate launcher is not installed")
    return found


@pytest.mark.multiprocess
def test_two_processes_equal_one(clips, tmp_path, cli):
    paths = cli.link_videos(tmp_path, clips)
    # A missing clip too: its error record must land in CSV order whichever rank reports it.
    rows = [(p, cli.prompts[i]) for i, p in enumerate(paths)]
    rows.insert(3, ("videos/missing.mp4", "nothing here"))
    csv_path = cli.write_csv(tmp_path / "seven.csv", rows)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    common = ["--model", "tiny-random", "--dtype", "float32", "--batch-size", "2"]
    single = cli.invoke("score", "--csv", csv_path, "--output", one, *common)
    assert single.exit_code == 1, single.output
    assert "on 1 process(es)" in single.output

    cmd = [_accelerate(), "launch", "--num_processes", "2", "--cpu", "-m", "videoalign", "score", "--csv",
           str(csv_path), "--output", str(two), *common]
    proc = subprocess.run(cmd, check=False, cwd=cli.repo, env=cli.env(OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log  # one failed video -> exit 1 on every rank
    assert "7 videos in" in log and "on 2 process(es)" in log, log
    a, b = cli.read_jsonl(one), cli.read_jsonl(two)
    assert [r["video"] for r in a] == [r["video"] for r in b] == [r[0] for r in rows]
    for r, s in zip(a, b):
        assert ("error" in r) == ("error" in s)
        if "error" in r:
            assert r["error"] == s["error"]
            continue
        assert _scores_close(r, s), (r, s)
        assert (r["num_frames"], r["grid_thw"]) == (s["num_frames"], s["grid_thw"])
    assert not Path(str(two) + ".parts").exists()


# --- 9. the debug recipe runs --------------------------------------------------------------


def test_debug_recipe_runs(csv6, tmp_path, cli):
    recipe = cli.repo / "recipes" / "debug" / "score.yaml"
    if not recipe.is_file():
        pytest.skip(f"{recipe} does not exist yet")
    out = tmp_path / "recipe.jsonl"
    result = cli.invoke("score", "--recipe", recipe, "--csv", csv6, "--output", out)
    assert result.exit_code == 0, result.output
    records = cli.read_jsonl(out)
    assert len(records) == 6 and all("error" not in r for r in records)
    import yaml

    resolved = yaml.safe_load(Path(str(out) + ".config.yaml").read_text())
    wanted = yaml.safe_load(recipe.read_text())
    assert {k: resolved[k] for k in wanted} == wanted  # every recipe key reached the resolved config
    assert resolved["csv"] == str(csv6) and resolved["output"] == str(out)  # flags on top


def test_set_overrides_recipe_and_flags(csv6, tmp_path, cli):
    recipe = cli.repo / "recipes" / "debug" / "score.yaml"
    if not recipe.is_file():
        pytest.skip(f"{recipe} does not exist yet")
    out = tmp_path / "o.jsonl"
    result = cli.invoke("score", "--recipe", recipe, "--csv", csv6, "--output", out, "--batch-size", "3",
                        "--set", "batch_size=5", "--set", "num_frames=2")
    assert result.exit_code == 0, result.output
    import yaml

    resolved = yaml.safe_load(Path(str(out) + ".config.yaml").read_text())
    assert resolved["batch_size"] == 5 and resolved["num_frames"] == 2
    assert {r["num_frames"] for r in cli.read_jsonl(out)} == {2}
    assert os.path.getsize(out) > 0
