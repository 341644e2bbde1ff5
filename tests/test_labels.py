"""videoalign.labels: the one label vocabulary and the one pair reader (read_pairs, read_preferences), and
data.read_rewarded_videos. A bad line is reported as "<file> line N: ..." and skipped; the rest is read. Videos
are small real mp4s (9 frames, 32 x 32)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from videoalign.data import DataError, read_rewarded_videos
from videoalign.labels import CELLS, INVALID, SIDES, VOTES, label_of, read_pairs, read_preferences
from videoalign.video import write_video


def test_the_one_vocabulary():
    """Pair-CSV cells: "A" 1, "B" -1, "same" 0, "invalid", "" and None INVALID (22, masked); surrounding spaces are
    stripped (" A" is A); anything else (NaN, other case, numbers) is not a label (None: its row is reported).
    GenAI-Bench votes: leftvote 1, rightvote -1, tievote 0, bothbad_vote 0. Relabel's: chosen 1, rejected -1, tie 0."""
    cells = ["A", "B", "same", "invalid", "", None, " A", math.nan, "a", "Same", 1]
    assert [label_of(v) for v in cells] == [1, -1, 0, 22, 22, 22, 1, None, None, None, None]
    assert INVALID == 22 and CELLS["A"] == 1
    assert [label_of(v, VOTES) for v in ("leftvote", "rightvote", "tievote", "bothbad_vote")] == [1, -1, 0, 0]
    assert [label_of(v, VOTES) for v in ("left", math.nan)] == [None, None]
    assert [label_of(v, SIDES) for v in ("chosen", "rejected", "tie", "better")] == [1, -1, 0, None]


def test_vote_file(tmp_path, videos):
    """GenAI-Bench votes (JSONL): the vote is the Overall label, left = A; an unknown vote is a problem."""
    path = _write_lines(tmp_path / "votes.jsonl", [
        {"left_video": "a.mp4", "right_video": "b.mp4", "prompt": "a fox", "vote_type": "rightvote"},
        {"left_video": "c.mp4", "right_video": "d.mp4", "text": "a bird", "vote_type": "bothbad_vote"},
        {"left_video": "c.mp4", "right_video": "d.mp4", "prompt": "a cat", "vote_type": "maybe"},
    ])
    found = read_pairs(path, videos["a"].parent)
    assert found.kind == "votes" and [(p.labels, p.prompt) for p in found.pairs] == [
        ({"Overall": -1}, "a fox"), ({"Overall": 0}, "a bird")]
    assert len(found.problems) == 1 and "line 3: vote_type label 'maybe' is unknown" in found.problems[0]


def test_repeated_rows_are_kept_and_counted(tmp_path, videos):
    """Every row is a pair: a row repeated twice more gives three pairs, and `repeated` says 2."""
    path = tmp_path / "pairs.csv"
    path.write_text("path_A,path_B,prompt,VQ\n" + "a.mp4,b.mp4,a fox,A\n" * 3 + "c.mp4,d.mp4,a bird,B\n")
    found = read_pairs(path, videos["a"].parent)
    assert [p.line for p in found.pairs] == [2, 3, 4, 5] and found.repeated == 2 and found.dims == ["VQ"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """a.mp4 ... d.mp4 in one folder: 9 frames of 32 x 32, each a different grey level."""
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for i, name in enumerate("abcd"):
        frames = torch.full((9, 32, 32, 3), 40 * (i + 1), dtype=torch.uint8)
        out[name] = write_video(root / f"{name}.mp4", frames, fps=8)
    return out


def _write_lines(path: Path, lines: list) -> Path:
    """Each entry a dict (dumped as JSON) or a raw string (written as is)."""
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def _pair(chosen, rejected, prompt, sc, sr, weights=None):
    """A relabel pair record with scores {VQ, MQ, TA} per side."""
    rec = {"prompt": prompt, "group": "g", "chosen": str(chosen), "rejected": str(rejected),
           "scores": {"chosen": dict(zip(("VQ", "MQ", "TA"), sc)), "rejected": dict(zip(("VQ", "MQ", "TA"), sr))}}
    if weights is not None:
        rec["weights"] = weights
    return rec


def _relabel_file(tmp_path, videos) -> Path:
    """Line 1 ok (1:1:1), 2 malformed JSON, 3 no "chosen", 4 a missing video, 5 relabel's error record,
    6 blank (skipped silently, still counted), 7 ok with weights 0:0:1 and relative paths."""
    v = videos
    return _write_lines(tmp_path / "pairs.jsonl", [
        _pair(v["a"], v["b"], "a fox", (1.0, 2.0, 3.0), (0.0, -1.0, 0.5), {"VQ": 1, "MQ": 1, "TA": 1}),
        '{"prompt": "broken", "chosen": ',
        {"prompt": "no chosen", "rejected": str(v["a"])},
        _pair(v["a"], v["a"].parent / "gone.mp4", "a ghost", (1, 1, 1), (0, 0, 0)),
        {"video": str(v["c"]), "prompt": "a bird", "error": "cannot decode"},
        "",
        _pair("c.mp4", "d.mp4", "a bird", (3.0, 0.0, -1.0), (-3.0, 0.0, 2.0), {"VQ": 0, "MQ": 0, "TA": 1}),
    ])


def test_read_preference_pairs_from_relabel_jsonl(tmp_path, videos):
    """Lines 1 and 7 are read. Rewards are the weighted scores:
    line 1 (weights 1:1:1): chosen (1 + 2 + 3)/3 = 2, rejected (0 - 1 + 0.5)/3 = -1/6;
    line 7 (weights 0:0:1, TA only): chosen -1, rejected 2 (relabel's orientation is kept as written).
    Relative paths resolve against the file's folder when no videos_root is given (here: none exist there), and
    against videos_root when one is given."""
    path = _relabel_file(tmp_path, videos)
    found = read_preferences(path, videos_root=videos["a"].parent)
    pairs, problems = found.pairs, found.problems
    assert [p.line for p in pairs] == [1, 7]
    first, last = pairs
    assert (first.prompt, first.path_a, first.path_b) == ("a fox", videos["a"], videos["b"])
    assert first.rewards() == pytest.approx((2.0, -1 / 6))
    assert (last.path_a, last.path_b) == (videos["c"], videos["d"])
    assert last.rewards() == pytest.approx((-1.0, 2.0))

    assert len(problems) == 4
    by_line = {int(p.split(" line ")[1].split(":")[0]): p for p in problems}
    assert sorted(by_line) == [2, 3, 4, 5]
    assert all(p.startswith(f"{path} line ") for p in problems)
    assert "not valid JSON" in by_line[2]
    assert "missing field 'chosen'" in by_line[3]
    assert "missing video" in by_line[4] and "gone.mp4" in by_line[4]
    assert "relabel could not score" in by_line[5] and "cannot decode" in by_line[5]

    # without videos_root the relative paths of line 7 resolve against pairs.jsonl's folder, where they do not exist
    here = read_preferences(path)
    pairs_here, problems_here = here.pairs, here.problems
    assert [p.line for p in pairs_here] == [1]
    assert any(p.startswith(f"{path} line 7: missing video {tmp_path / 'c.mp4'}") for p in problems_here)


def test_read_preference_pairs_weights_override(tmp_path, videos):
    """weights={TA: 1} replaces each line's own weights: line 1 -> chosen 3, rejected 0.5; line 7 -> -1, 2."""
    path = _relabel_file(tmp_path, videos)
    pairs = read_preferences(path, videos_root=videos["a"].parent).pairs
    assert [p.rewards({"TA": 1.0}) for p in pairs] == [(3.0, 0.5), (-1.0, 2.0)]


def test_read_preference_pairs_from_reference_csv(tmp_path, videos):
    """CSV lines count from 2 (line 1 is the header). With an Overall column the Overall label decides, even
    against the dimension labels (line 2: Overall B over A, A, A -> chosen b). An empty Overall falls back to the
    majority of VQ, MQ, TA (line 3: A, B, A -> +1 -> chosen a). A tie (line 4: Overall same) and an unknown label
    (line 5: "C") are problems, in line order. Label-only pairs have no rewards."""
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        "path_A,path_B,prompt,VQ,MQ,TA,Overall\n"
        "a.mp4,b.mp4,a fox,A,A,A,B\n"
        "c.mp4,d.mp4,a bird,A,B,A,\n"
        "a.mp4,c.mp4,a tie,A,B,same,same\n"
        "b.mp4,d.mp4,bad label,A,A,A,C\n")
    found = read_preferences(csv_path, videos_root=videos["a"].parent)
    pairs, problems = found.pairs, found.problems
    assert [(p.line, p.path_a.name, p.path_b.name, p.prompt) for p in pairs] == [
        (2, "b.mp4", "a.mp4", "a fox"), (3, "c.mp4", "d.mp4", "a bird")]
    assert all(p.rewards() is None for p in pairs)
    assert len(problems) == 2
    assert problems[0].startswith(f"{csv_path} line 4: a tie")
    assert problems[1] == f"{csv_path} line 5: Overall label 'C' is unknown; use A, B, same, invalid"


def test_read_preference_pairs_csv_majority_without_overall(tmp_path, videos):
    """No Overall column: B, B, A -> -1 -> chosen = path_B; A, B, same -> 0 -> a tie; no labels -> a problem."""
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("path_A,path_B,prompt,VQ,MQ,TA\n"
                        "a.mp4,b.mp4,p1,B,B,A\n"
                        "a.mp4,b.mp4,p2,A,B,same\n"
                        "a.mp4,b.mp4,p3,,,\n")
    found = read_preferences(csv_path, videos_root=videos["a"].parent)
    pairs, problems = found.pairs, found.problems
    assert [(p.path_a.name, p.path_b.name) for p in pairs] == [("b.mp4", "a.mp4")]
    assert "line 3: a tie" in problems[0] and "line 4: no usable label" in problems[1]


def test_read_rewarded_videos_from_pairs(tmp_path, videos):
    """A pair file gives both sides of each good pair, the chosen flagged: line 1 -> (a, 2, chosen),
    (b, -1/6, rejected); line 7 -> (c, -1, chosen), (d, 2, rejected). The problems are the pair reader's."""
    path = _relabel_file(tmp_path, videos)
    got, problems = read_rewarded_videos(path, videos_root=videos["a"].parent)
    assert [(v.line, v.path.name, v.chosen, v.prompt) for v in got] == [
        (1, "a.mp4", True, "a fox"), (1, "b.mp4", False, "a fox"),
        (7, "c.mp4", True, "a bird"), (7, "d.mp4", False, "a bird")]
    assert [v.reward for v in got] == pytest.approx([2.0, -1 / 6, -1.0, 2.0])
    assert len(problems) == 4


def test_read_rewarded_videos_detects_a_pair_file_whose_first_line_is_bad(tmp_path, videos):
    """The pair format is recognised from any line, so a first line without "chosen" is one problem, not a reason
    to read the whole file as score records."""
    path = _write_lines(tmp_path / "pairs.jsonl", [
        {"prompt": "no chosen", "rejected": str(videos["a"])},
        _pair(videos["a"], videos["b"], "a fox", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
    ])
    got, problems = read_rewarded_videos(path)
    assert [(v.line, v.path, v.reward, v.chosen) for v in got] == [(2, videos["a"], 1.0, True),
                                                                   (2, videos["b"], 0.0, False)]
    assert len(problems) == 1 and "line 1: missing field 'chosen'" in problems[0]


def test_read_rewarded_videos_from_score_records(tmp_path, videos):
    """score's JSONL: reward = weighted scores (default 1:1:1). Line 1: (0.3 + 0.6 + 0.9)/3 = 0.6 (path wins over
    video); line 2: (-1 + 0 + 4)/3 = 1 (relative video, resolved against videos_root); line 3: error record;
    line 4: missing TA; line 5: missing video; line 6: not JSON. With weights {TA: 1}: 0.9 and 4."""
    path = _write_lines(tmp_path / "scores.jsonl", [
        {"video": "ignored.mp4", "path": str(videos["a"]), "prompt": "a fox", "VQ": 0.3, "MQ": 0.6, "TA": 0.9},
        {"video": "b.mp4", "prompt": "a cat", "VQ": -1.0, "MQ": 0.0, "TA": 4.0},
        {"video": "c.mp4", "prompt": "a bird", "error": "too short"},
        {"video": "d.mp4", "prompt": "a dog", "VQ": 1.0, "MQ": 1.0},
        {"video": "nowhere.mp4", "prompt": "a dog", "VQ": 1.0, "MQ": 1.0, "TA": 1.0},
        "{oops",
    ])
    got, problems = read_rewarded_videos(path, videos_root=videos["a"].parent)
    assert [(v.line, v.path, v.prompt, v.chosen) for v in got] == [(1, videos["a"], "a fox", True),
                                                                   (2, videos["b"], "a cat", True)]
    assert [v.reward for v in got] == pytest.approx([0.6, 1.0])
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path} line {n}" for n in (3, 4, 5, 6)]
    assert "has no score (too short)" in problems[0]
    assert "missing field 'TA'" in problems[1]
    assert "missing video" in problems[2] and "nowhere.mp4" in problems[2]
    assert "not a JSON object" in problems[3]
    ta_only, _ = read_rewarded_videos(path, videos_root=videos["a"].parent, weights={"TA": 1.0})
    assert [v.reward for v in ta_only] == pytest.approx([0.9, 4.0])


def test_read_rewarded_videos_from_label_csv(tmp_path, videos):
    """A label-only CSV has no rewards: need_rewards=True is an error that says so; need_rewards=False gives both
    sides with reward None (for uniform weighting)."""
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("path_A,path_B,prompt,Overall\na.mp4,b.mp4,a fox,A\n")
    with pytest.raises(DataError, match="has labels but no scores"):
        read_rewarded_videos(csv_path, videos_root=videos["a"].parent)
    got, problems = read_rewarded_videos(csv_path, videos_root=videos["a"].parent, need_rewards=False)
    assert [(v.path.name, v.reward, v.chosen) for v in got] == [("a.mp4", None, True), ("b.mp4", None, False)]
    assert problems == []


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_preferences(tmp_path / "nope.jsonl")


# -- per-dimension labels (train-latent-rm, train-reward) ---------------------------------------------------------

def test_read_pairs_per_dimension_from_relabel_jsonl(tmp_path, videos):
    """A = chosen, B = rejected. Line 1: labels chosen/rejected/tie -> 1, -1, 0. Line 2: an unknown MQ label
    ("better") is a problem like any value outside the vocabulary (a missing TA label alone would be 22, masked).
    Line 3: no labels, scores chosen - rejected = (+2, 0, -1) -> 1, 0, -1. Line 4's only label "?" is unknown, line 5
    is broken JSON, line 6 names a missing video: reported by line, skipped."""
    v = videos
    base = {"prompt": "a fox", "chosen": "a.mp4", "rejected": "b.mp4"}
    path = _write_lines(tmp_path / "labelled.jsonl", [
        {**base, "labels": {"VQ": "chosen", "MQ": "rejected", "TA": "tie", "Overall": "chosen"}},
        {**base, "labels": {"VQ": "rejected", "MQ": "better"}},
        _pair(v["c"], v["d"], "a bird", (3.0, 1.0, 0.0), (1.0, 1.0, 1.0)),
        {**base, "labels": {"VQ": "?"}},
        '{"prompt": ',
        {**base, "rejected": "gone.mp4", "labels": {"VQ": "chosen"}},
    ])
    found = read_pairs(path, v["a"].parent, ["VQ", "MQ", "TA"])
    pairs, problems = found.pairs, found.problems
    assert [p.line for p in pairs] == [1, 3]
    assert [p.dim_labels(["VQ", "MQ", "TA"]) for p in pairs] == [[1, -1, 0], [1, 0, -1]]
    assert pairs[0].path_a == v["a"] and pairs[0].path_b == v["b"] and pairs[1].path_a == v["c"]
    assert [p.split(": ")[0] for p in problems] == [f"{path} line {n}" for n in (2, 4, 5, 6)]
    assert "MQ label 'better' is unknown" in problems[0] and "VQ label '?' is unknown" in problems[1]
    assert "not valid JSON" in problems[2] and "gone.mp4" in problems[3]
    partial = _write_lines(tmp_path / "partial.jsonl", [{"prompt": "a fox", "chosen": "a.mp4", "rejected": "b.mp4",
                                                         "labels": {"VQ": "rejected"}}])
    assert read_pairs(partial, v["a"].parent, ["VQ", "MQ", "TA"]).pairs[0].dim_labels(["VQ", "MQ", "TA"]) == \
        [-1, 22, 22]


def test_read_pairs_from_pair_csv_keeps_dims_order(tmp_path, videos):
    """CSV labels A/B/same -> 1/-1/0 per column, invalid and empty 22; `dims` picks and orders the columns."""
    path = tmp_path / "pairs.csv"
    path.write_text("path_A,path_B,prompt,VQ,MQ,TA\n"
                    "a.mp4,b.mp4,a fox,A,same,B\n"
                    "c.mp4,d.mp4,a bird,invalid,B,\n"
                    "c.mp4,d.mp4,a cat,invalid,,\n"
                    ",d.mp4,no path,A,A,A\n")
    found = read_pairs(path, videos["a"].parent, dims=["TA", "VQ"])
    pairs, problems = found.pairs, found.problems
    # line 3 keeps MQ = B, but MQ is not asked for: TA empty and VQ invalid leave nothing usable, as on line 4
    assert [(p.line, p.prompt, p.dim_labels(["TA", "VQ"])) for p in pairs] == [(2, "a fox", [-1, 1])]
    assert [p.split(": ")[0] for p in problems] == [f"{path} line {n}" for n in (3, 4, 5)]
    assert "no usable label" in problems[0] and "path_A" in problems[2]
    every = read_pairs(path, videos["a"].parent)
    assert every.dims == ["VQ", "MQ", "TA"]
    assert [p.dim_labels(every.dims) for p in every.pairs] == [[1, 0, -1], [22, -1, 22]]
