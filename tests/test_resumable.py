"""resumable.ResumableOutput: the one output that several processes fill and a rerun resumes."""

from __future__ import annotations

import json

import pytest

from videoalign.resumable import ResumableOutput


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_parts_are_merged_in_order_with_the_old_file_and_deleted(tmp_path):
    """The final file holds keys 1 and 9 (9 not in this input: a shared cache keeps it); two ranks appended 2, 3 and
    a newer 1. merge([1, 2, 3]) writes 1 (the newer), 2, 3, then 9, and removes the parts."""
    out = ResumableOutput(tmp_path / "out.jsonl", lambda r: r["k"], tmp_path / "out.config.yaml")
    (tmp_path / "out.jsonl").write_text('{"k": 1, "v": "old"}\n{"k": 9, "v": "kept"}\n')
    out.append(0, [{"k": 3, "v": "c"}])
    out.append(1, [{"k": 2, "v": "b"}, {"k": 1, "v": "new"}])
    assert out.exists() and sorted(out.done()) == [1, 2, 3, 9]
    ordered = out.merge([1, 2, 3])
    assert [r["v"] for r in ordered] == ["new", "b", "c"]
    assert [r["k"] for r in _lines(tmp_path / "out.jsonl")] == [1, 2, 3, 9]
    assert not out.parts.exists()


def test_a_torn_part_loses_only_its_unfinished_line(tmp_path):
    """A rank killed mid-write leaves a torn last line: done() skips it, the whole records before it count."""
    out = ResumableOutput(tmp_path / "out.jsonl", lambda r: r["k"], tmp_path / "s.yaml")
    out.append(0, [{"k": 1}])
    with open(out.parts / "rank0.jsonl", "a") as fh:
        fh.write('{"k": 2, "v": "cut sh')
    assert list(out.done()) == [1]
    out.append(0, [{"k": 3}])  # the next append cuts the torn line off first
    assert list(out.done()) == [1, 3]


def test_other_settings_are_refused_naming_each(tmp_path):
    out = ResumableOutput(tmp_path / "out.jsonl", lambda r: r["k"], tmp_path / "out.config.yaml")
    out.check_settings({"model": "a"})  # nothing written yet: nothing to compare
    out.save_settings({"model": "a", "fps": 2.0, "batch_size": 8})
    out.check_settings({"model": "b"})  # settings but no records yet: a fresh start
    out.append(0, [{"k": 1}])
    out.check_settings({"model": "a", "fps": 2.0})
    with pytest.raises(ValueError, match=r"holds scores made with other settings \(model: 'a' -> 'b', fps: 2.0 -> 1.0\)"):
        out.check_settings({"model": "b", "fps": 1.0}, "scores")
