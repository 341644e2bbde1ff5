"""Pairing and labelling of scored videos (videoalign/preferences.py): pure functions, hand-computed values."""

import pytest

from videoalign.preferences import label_pair, make_pair, pair_group, parse_weights, weighted_reward

DIMS = ["VQ", "MQ", "TA"]


def rec(path, vq, mq, ta, prompt="p"):
    return {"path": path, "prompt": prompt, "VQ": vq, "MQ": mq, "TA": ta}


def test_parse_weights_forms():
    assert parse_weights("1:1:1", DIMS) == {"VQ": 1.0, "MQ": 1.0, "TA": 1.0}
    assert parse_weights("0.1:0.1:0.8", DIMS) == {"VQ": 0.1, "MQ": 0.1, "TA": 0.8}
    assert parse_weights("TA=1", DIMS) == {"VQ": 0.0, "MQ": 0.0, "TA": 1.0}
    with pytest.raises(ValueError, match="needs 3 values"):
        parse_weights("1:1", DIMS)
    with pytest.raises(ValueError, match="unknown dimensions XX"):
        parse_weights("XX=1", DIMS)
    with pytest.raises(ValueError, match="positive sum"):
        parse_weights("0:0:0", DIMS)


def test_weighted_reward_is_the_weighted_mean():
    # (1*3 + 1*0 + 2*(-1)) / 4 = 0.25
    assert weighted_reward({"VQ": 3.0, "MQ": 0.0, "TA": -1.0}, {"VQ": 1, "MQ": 1, "TA": 2}) == pytest.approx(0.25)


def test_label_pair_ties_and_margin():
    # diffs: VQ +0.5, MQ -0.05, TA -0.3; tie threshold 0.1 -> chosen, tie, rejected
    # margin with 1:1:1 = (0.5 - 0.05 - 0.3)/3 = 0.05 -> reward tie (0.05 <= 0.1)
    labels, margin = label_pair({"VQ": 1.0, "MQ": 0.0, "TA": 0.0}, {"VQ": 0.5, "MQ": 0.05, "TA": 0.3},
                                {"VQ": 1, "MQ": 1, "TA": 1}, tie_threshold=0.1)
    assert labels == {"VQ": "chosen", "MQ": "tie", "TA": "rejected", "reward": "tie"}
    assert margin == pytest.approx(0.05)


def test_make_pair_orients_by_weighted_reward():
    a, b = rec("a", 1.0, 0.0, 0.0), rec("b", 0.0, 0.0, 2.0)
    # 1:1:1 -> r(a) = 1/3, r(b) = 2/3: b is chosen
    assert make_pair(a, b, parse_weights("1:1:1", DIMS), 0.0, None)["chosen"] == "b"
    # VQ only -> a is chosen, margin 1.0, TA labelled "rejected" for the chosen side
    pair = make_pair(a, b, parse_weights("1:0:0", DIMS), 0.0, "g")
    assert (pair["chosen"], pair["rejected"], pair["group"]) == ("a", "b", "g")
    assert pair["margin"] == pytest.approx(1.0)
    assert pair["labels"] == {"VQ": "chosen", "MQ": "tie", "TA": "rejected", "reward": "chosen"}


def test_pair_group_all_and_best_worst():
    w = parse_weights("1:1:1", DIMS)
    group = [rec("x", 0, 0, 0), rec("y", 3, 0, 0), rec("z", 1, 0, 0)]
    pairs = pair_group(group, w, "all", 0.0, "g")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("y", "x"), ("z", "x"), ("y", "z")]
    (best_worst,) = pair_group(group, w, "best-worst", 0.0, "g")
    assert (best_worst["chosen"], best_worst["rejected"]) == ("y", "x")
    assert best_worst["margin"] == pytest.approx(1.0)  # (3 - 0) / 3
    assert pair_group(group[:1], w, "all", 0.0, "g") == []
