"""Tests for videoalign.data: score CSVs, JSONL reading/appending, atomic writes, the prefetch pool."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from videoalign.data import (
    DataError,
    append_jsonl,
    prefetch,
    read_jsonl,
    read_score_csv,
    video_key,
    write_jsonl_atomic,
)

# ---- read_score_csv ------------------------------------------------------------------------------


def test_video_prompt_csv_resolves_paths_relative_to_the_csv(tmp_path, monkeypatch):
    folder = tmp_path / "job"
    folder.mkdir()
    csv_path = folder / "clips.csv"
    csv_path.write_text('video,prompt\nvideos/a.mp4,"a cat, on a mat"\n/abs/b.mp4,a dog\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths must not depend on the working directory
    items = read_score_csv(csv_path)
    assert [(it.video, it.prompt, it.error) for it in items] == [
        ("videos/a.mp4", "a cat, on a mat", None),
        ("/abs/b.mp4", "a dog", None),
    ]
    assert items[0].path == folder / "videos" / "a.mp4"
    assert items[1].path.as_posix() == "/abs/b.mp4"
    assert items[0].key == video_key(folder / "videos" / "a.mp4")


def test_relative_csv_path_resolves_against_its_folder(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.csv").write_text("video,prompt\nx.mp4,p\n")
    monkeypatch.chdir(tmp_path)
    (item,) = read_score_csv("sub/c.csv")
    assert item.path == tmp_path / "sub" / "x.mp4"


def test_pair_csv_dedupes_and_keeps_the_first_prompt(tmp_path):
    """The reference pair CSV (docs/numerics.md, Accuracy with and without ties): every distinct video once, with its first row's prompt;
    `videos/x.mp4` and `./videos/x.mp4` are one video."""
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        "path_A,path_B,prompt,VQ,MQ,TA\n"
        "videos/x.mp4,./videos/y.mp4,first,A,B,same\n"
        "./videos/x.mp4,videos/z.mp4,second,A,A,A\n"
        "videos/./y.mp4,videos/x.mp4,third,B,B,B\n",
        encoding="utf-8",
    )
    items = read_score_csv(csv_path)
    assert [(it.video, it.prompt) for it in items] == [
        ("videos/x.mp4", "first"),
        ("./videos/y.mp4", "first"),
        ("videos/z.mp4", "second"),
    ]
    assert [it.path for it in items] == [tmp_path / "videos" / n for n in ("x.mp4", "y.mp4", "z.mp4")]
    assert all(it.error is None for it in items)


def test_shared_example_csv(shared_data):
    """The shared example pair CSV: 12 rows, six distinct clips, all of which exist."""
    items = read_score_csv(shared_data / "videoalign_examples" / "example.csv")
    assert sorted(it.path.name for it in items) == sorted(
        f"example_{i}_{s}.mp4" for i in (1, 2, 3) for s in ("A", "B")
    )
    assert all(it.path.is_file() and it.error is None for it in items)


def test_bom_and_spaces_in_header(tmp_path):
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes("\ufeffvideo , prompt\na.mp4,p\n".encode("utf-8"))
    (item,) = read_score_csv(csv_path)
    assert (item.video, item.prompt) == ("a.mp4", "p")


@pytest.mark.parametrize("header", ["path,text", "video,caption", "path_A,prompt", ""])
def test_missing_columns_name_the_file_and_the_columns(tmp_path, header):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(header + "\nx.mp4,y\n" if header else "")
    with pytest.raises(DataError) as err:
        read_score_csv(csv_path)
    message = str(err.value)
    assert str(csv_path) in message
    assert "video,prompt" in message and "path_A,path_B,prompt" in message


def test_missing_csv_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such CSV"):
        read_score_csv(tmp_path / "nope.csv")


def test_empty_video_cell_is_an_item_error(tmp_path):
    csv_path = tmp_path / "holes.csv"
    csv_path.write_text("path_A,path_B,prompt\na.mp4,,p1\n,b.mp4,p2\n")
    items = read_score_csv(csv_path)
    good = [it for it in items if it.error is None]
    bad = [it for it in items if it.error is not None]
    assert [it.video for it in good] == ["a.mp4", "b.mp4"]
    assert len(bad) == 2
    assert "row 2" in bad[0].error and "path_B" in bad[0].error and str(csv_path) in bad[0].error
    assert "row 3" in bad[1].error and "path_A" in bad[1].error


def test_short_row_without_prompt_is_an_item_error(tmp_path):
    csv_path = tmp_path / "short.csv"
    csv_path.write_text("video,prompt\na.mp4\nb.mp4,ok\n")
    a, b = read_score_csv(csv_path)
    assert a.error is not None and "row 2" in a.error and "prompt" in a.error
    assert b.error is None


def test_empty_prompt_cell_is_an_item_error(tmp_path):
    csv_path = tmp_path / "empty_prompt.csv"
    csv_path.write_text("video,prompt\na.mp4,\n")
    (item,) = read_score_csv(csv_path)
    assert item.error is not None and "prompt" in item.error


# ---- JSONL ---------------------------------------------------------------------------------------


def test_read_jsonl_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": ')
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]


def test_read_jsonl_skips_blank_lines_and_missing_file(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": "\xc3\xa9"}\n')
    assert read_jsonl(path) == [{"a": 1}, {"b": "\u00e9"}]
    assert read_jsonl(tmp_path / "absent.jsonl") == []


def test_read_jsonl_errors_on_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(DataError, match="line 2") as err:
        read_jsonl(path)
    assert str(path) in str(err.value)


def test_append_jsonl_creates_and_appends(tmp_path):
    path = tmp_path / "deep" / "out.jsonl"
    append_jsonl(path, [{"a": 1}, {"t": "\u00e9"}])
    append_jsonl(path, [])  # nothing to write: no change
    append_jsonl(path, [{"b": 2}])
    assert path.read_bytes() == b'{"a": 1}\n{"t": "\xc3\xa9"}\n{"b": 2}\n'


def test_append_jsonl_after_a_torn_line_cuts_the_torn_tail(tmp_path):
    """A writer killed mid-line left `{"b": 2` (never a record: readers ignore it). Appending cuts it off, so
    it cannot turn into a corrupt middle line; a file that is one torn line becomes just the new records."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2')
    append_jsonl(path, [{"c": 3}])
    assert path.read_bytes() == b'{"a": 1}\n{"c": 3}\n'
    only_torn = tmp_path / "torn.jsonl"
    only_torn.write_bytes(b'{"x": ')
    append_jsonl(only_torn, [{"c": 3}])
    assert only_torn.read_bytes() == b'{"c": 3}\n'


def test_read_after_append_to_a_torn_file_keeps_every_whole_record(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2')  # a writer killed mid-line
    assert read_jsonl(path) == [{"a": 1}]  # what a resuming job sees as done
    append_jsonl(path, [{"c": 3}])  # the resumed job appends
    assert read_jsonl(path) == [{"a": 1}, {"c": 3}]


def test_write_jsonl_atomic_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "final.jsonl"
    path.write_text("old content\n")
    write_jsonl_atomic(path, [{"a": 1}, {"b": [1, 2]}])
    assert read_jsonl(path) == [{"a": 1}, {"b": [1, 2]}]
    assert path.read_text().endswith("\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.jsonl"]
    write_jsonl_atomic(tmp_path / "empty.jsonl", [])
    assert (tmp_path / "empty.jsonl").read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "final.jsonl"]


def test_write_jsonl_atomic_failure_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "final.jsonl"
    path.write_text('{"old": 1}\n')

    def records():
        yield {"a": 1}
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, records())
    assert read_jsonl(path) == [{"old": 1}]
    with pytest.raises(TypeError):
        write_jsonl_atomic(path, [{"x": object()}])  # not JSON-serialisable
    assert read_jsonl(path) == [{"old": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.jsonl"]


# ---- prefetch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_prefetch_preserves_order_and_yields_exceptions(workers):
    """Later items finish first (shorter sleeps) yet come out in input order; failures come back as values."""

    def work(i):
        time.sleep(0.002 * (10 - i))
        if i % 4 == 3:
            raise ValueError(f"bad {i}")
        return i * i

    out = list(prefetch(work, range(10), workers=workers, ahead=4))
    assert [item for item, _ in out] == list(range(10))
    for i, result in out:
        if i % 4 == 3:
            assert isinstance(result, ValueError) and str(result) == f"bad {i}"
        else:
            assert result == i * i


def test_prefetch_uses_worker_threads_and_bounds_lookahead():
    """With 2 workers and ahead=2, at most ahead+1 items are submitted before the consumer takes the first."""
    started: list[int] = []
    threads: set[str] = set()
    lock = threading.Lock()

    def work(i):
        with lock:
            started.append(i)
            threads.add(threading.current_thread().name)
        return i

    gen = prefetch(work, range(20), workers=2, ahead=2)
    first = next(gen)
    assert first == (0, 0)
    time.sleep(0.05)
    with lock:
        assert len(started) <= 3  # ahead + 1 submitted; nothing more until the consumer asks
    rest = list(gen)
    assert [i for i, _ in rest] == list(range(1, 20))
    assert all(name.startswith("videoalign-prefetch") for name in threads)
    assert threading.current_thread().name not in threads


def test_prefetch_empty():
    assert list(prefetch(lambda x: x, [], workers=2, ahead=2)) == []


def test_video_key_normalises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        video_key("videos/x.mp4") == video_key("./videos/x.mp4") == video_key(tmp_path / "videos" / "x.mp4")
    )
    assert video_key("videos/../videos/x.mp4") == os.path.join(str(tmp_path), "videos", "x.mp4")
    assert json.dumps(video_key("a.mp4"))  # a plain string
