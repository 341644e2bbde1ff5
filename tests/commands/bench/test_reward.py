"""`videoalign bench reward` through the CLI: accuracy with and without ties, score reuse, calibration."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videoalign import metrics
from videoalign.cli import app
from videoalign.data import video_key
from videoalign.labels import INVALID, label_of

runner = CliRunner()


@pytest.fixture(scope="module")
def parity(shared_data) -> Path:
    return shared_data / "videoreward" / "parity" / "tiny_videoreward_full"


@pytest.fixture(scope="module")
def example(shared_data) -> Path:
    return shared_data / "videoalign_examples" / "example.csv"


@pytest.fixture(scope="module")
def scored(parity, example, tmp_path_factory) -> Path:
    """One `videoalign score` run over the example pairs, reused by the accuracy tests as a score cache."""
    out = tmp_path_factory.mktemp("bench_reward") / "scores.jsonl"
    result = runner.invoke(app, ["score", "--csv", str(example), "--output", str(out), "--model", str(parity),
                                 "--dtype", "float32", "--batch-size", "6"])
    assert result.exit_code == 0, result.output
    return out


def _margins(scores: Path, example: Path, dim: str):
    """Human labels and model margins recomputed independently from the score file and the pair CSV."""
    import csv

    by_path = {r["path"]: r for r in map(json.loads, scores.read_text().splitlines())}
    human, margin = [], []
    with example.open() as fh:
        for row in csv.DictReader(fh):
            a = by_path[video_key(example.parent / row["path_A"])]
            b = by_path[video_key(example.parent / row["path_B"])]
            label = label_of(row[dim])  # the one vocabulary; a masked label is a NaN human label here
            human.append(math.nan if label in (None, INVALID) else float(label))
            margin.append(a[dim] - b[dim])
    return human, margin


@pytest.mark.parametrize("ties", ["exact", "compat"])
def test_accuracy_reuses_scores_and_matches_metrics(scored, example, parity, tmp_path, ties):
    out = tmp_path / "report"
    result = runner.invoke(app, ["bench", "reward", "--pairs", str(example), "--model", str(parity), "--dtype",
                                 "float32", "--scores", str(scored), "--ties", ties, "--output", str(out),
                                 "--json", str(tmp_path / "acc.json")])
    assert result.exit_code == 0, result.output
    assert "6 already scored, 0 to score" in result.output  # `score`'s output is the cache: nothing rescored
    figures = json.loads((tmp_path / "acc.json").read_text())
    assert set(figures) == {"VQ", "MQ", "TA"}  # example.csv has no human Overall column
    with_ties = metrics.accuracy_with_ties_compat if ties == "compat" else metrics.accuracy_with_ties
    for dim, f in figures.items():
        human, margin = _margins(scored, example, dim)
        assert f["pairs"] == 12
        assert f["accuracy_without_ties"] == pytest.approx(metrics.accuracy_without_ties(human, margin))
        expected = with_ties(human, margin)
        assert f["accuracy_with_ties"] == pytest.approx(expected.accuracy)
        assert f["human_tie_rate"] == pytest.approx(sum(h == 0 for h in human) / 12)
        assert f["accuracy_with_ties"] >= f["human_tie_rate"] or ties == "compat"
    table = (tmp_path / "report.md").read_text()
    assert "| VQ |" in table and "accuracy w/ ties" in table
    assert (tmp_path / "report.ties.png").stat().st_size > 1000


def test_genai_bench_votes_with_overall_ta(scored, example, parity, tmp_path):
    """GenAI-Bench votes: left/right/tie/bothbad; Overall is the TA score alone (the paper's protocol)."""
    videos = example.parent / "videos"
    votes = [("example_1_A.mp4", "example_1_B.mp4", "leftvote"), ("example_2_A.mp4", "example_2_B.mp4", "tievote"),
             ("example_3_A.mp4", "example_3_B.mp4", "rightvote"), ("example_3_B.mp4", "example_1_A.mp4", "bothbad_vote")]
    pairs = tmp_path / "genai.jsonl"
    pairs.write_text("".join(json.dumps({"left_video": a, "right_video": b, "vote_type": v, "prompt": "p"}) + "\n"
                             for a, b, v in votes))
    result = runner.invoke(app, ["bench", "reward", "--pairs", str(pairs), "--videos-root", str(videos),
                                 "--model", str(parity), "--dtype", "float32", "--overall", "TA",
                                 "--output", str(tmp_path / "g"), "--json", str(tmp_path / "g.json")])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "g.json").read_text())
    assert list(figures) == ["Overall"]
    assert figures["Overall"]["pairs"] == 4
    assert figures["Overall"]["human_tie_rate"] == pytest.approx(0.5)


def test_calibrate_stores_statistics_that_score_then_uses(parity, example, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(parity, ckpt)
    (ckpt / "tiny_qwen2vl_base").symlink_to(parity.parent / "tiny_qwen2vl_base")
    videos = tmp_path / "videos.csv"
    videos.write_text("video,prompt\n" + "".join(f"{example.parent}/videos/example_{i}_{s}.mp4,a prompt {i}\n"
                                                  for i in (1, 2, 3) for s in "AB"))
    result = runner.invoke(app, ["bench", "reward", "--calibrate", "--csv", str(videos), "--model", str(ckpt),
                                 "--dtype", "float32", "--output", str(tmp_path / "cal")])
    assert result.exit_code == 0, result.output
    stats = json.loads((ckpt / "model_config.json").read_text())["inference_config"]
    assert set(stats) == {f"{d}_{k}" for d in ("VQ", "MQ", "TA") for k in ("mean", "std")}
    out = tmp_path / "after.jsonl"
    result = runner.invoke(app, ["score", "--csv", str(videos), "--output", str(out), "--model", str(ckpt),
                                 "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in out.read_text().splitlines()]
    for dim in ("VQ", "MQ", "TA"):
        z = [r[dim] for r in records]
        assert statistics.fmean(z) == pytest.approx(0.0, abs=1e-5)
        assert statistics.pstdev(z) == pytest.approx(1.0, abs=1e-5)
        raw = [r["raw"][dim] for r in records]
        assert stats[f"{dim}_mean"] == pytest.approx(statistics.fmean(raw), abs=1e-6)


def test_bad_pair_file_exits_2(tmp_path, parity):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["bench", "reward", "--pairs", str(bad), "--model", str(parity)])
    assert result.exit_code == 2
    assert "bad.csv" in result.output and "path_A,path_B" in result.output


def test_scores_without_paths_are_matched_by_the_pair_files_paths(scored, example, parity, tmp_path):
    """A score file from another tool has only `video` as the pair file writes it: it is reused as is."""
    foreign = tmp_path / "foreign.jsonl"
    lines = []
    for record in map(json.loads, scored.read_text().splitlines()):
        record.pop("path")
        record["video"] = record["video"].removeprefix("./")  # the pair file writes both spellings
        lines.append(json.dumps(record))
    foreign.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["bench", "reward", "--pairs", str(example), "--model", str(parity), "--dtype",
                                 "float32", "--scores", str(foreign), "--output", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "6 already scored, 0 to score" in result.output


def test_reference_protocol_scores_sorted_paths_in_batches_of_8(example, parity, tmp_path, monkeypatch):
    """docs/numerics.md, Accuracy with and without ties: distinct videos sorted by path as written, batches of 8, bf16 by default."""
    from videoalign.reward.videoreward import VideoReward

    seen = {}
    original = VideoReward.iter_scores

    def spy(self, pairs, **kw):
        seen["order"] = [item.video for item, _ in pairs]
        seen["batch_size"] = kw["batch_size"]
        seen["dtype"] = next(self.model.parameters()).dtype
        return original(self, pairs, **kw)

    monkeypatch.setattr(VideoReward, "iter_scores", spy)
    result = runner.invoke(app, ["bench", "reward", "--pairs", str(example), "--model", str(parity),
                                 "--protocol", "reference", "--output", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert seen["order"] == sorted(seen["order"]) and len(seen["order"]) == 6
    assert seen["order"][0] == "./videos/example_1_B.mp4"  # "./" sorts before "v": the pair file's spelling
    assert seen["batch_size"] == 8
    assert str(seen["dtype"]) == "torch.bfloat16"
