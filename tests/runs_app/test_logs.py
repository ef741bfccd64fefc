"""Log files: the format, the cap, and reading them as they grow (sequence numbers)."""

from __future__ import annotations

import errno

from runs_app.logs import (
    MAX_LINE_CHARS,
    STDERR,
    STDOUT,
    SYSTEM,
    LogTail,
    LogWriter,
    last_timestamps,
    read_lines,
)


def test_lines_are_written_at_once_with_timestamp_and_stream(tmp_path):
    path = tmp_path / "run.log"
    writer = LogWriter(path, max_bytes=10_000)
    writer.write(STDOUT, "hello", "2026-01-01T00:00:00.000000001Z")
    # Another reader sees the line before the writer closes: flushed per line.
    assert path.read_text() == "2026-01-01T00:00:00.000000001Z O hello\n"
    writer.write(STDERR, "oops", "2026-01-01T00:00:00.000000002Z")
    writer.system("note")
    writer.close()
    lines = read_lines(path)
    assert [(stream, text) for _, stream, text in lines] == [
        (STDOUT, "hello"),
        (STDERR, "oops"),
        (SYSTEM, "note"),
    ]
    assert last_timestamps(path) == {
        "O": "2026-01-01T00:00:00.000000001Z",
        "E": "2026-01-01T00:00:00.000000002Z",
    }


def test_masking_happens_before_the_write(tmp_path):
    path = tmp_path / "run.log"
    writer = LogWriter(path, mask=lambda text: text.replace("hunter2", "***"))
    writer.write(STDOUT, "password is hunter2")
    writer.close()
    assert "hunter2" not in path.read_text()
    assert "password is ***" in path.read_text()


def test_the_cap_keeps_fast_flow_lines_and_counts_dropped_ones(tmp_path):
    path = tmp_path / "run.log"
    writer = LogWriter(path, max_bytes=200)
    for i in range(20):
        writer.write(STDOUT, f"line {i:04}")
    assert writer.overflowed  # the follower stops the run
    writer.system("finished: failed")
    writer.close()
    text = path.read_text()
    assert "the log reached LOG_MAX_SIZE_MB" in text
    assert "finished: failed" in text
    assert "line(s) were not kept" in text
    assert "line 0019" not in text


def test_lines_the_run_makes_fast_flow_write_count_against_the_cap(tmp_path):
    """A pipeline's marker lines (notes) are its output: they cannot pass the cap, while
    Fast-Flow's own lines have a small reserve beyond it."""
    path = tmp_path / "run.log"
    writer = LogWriter(path, max_bytes=300)
    for i in range(50):
        writer.write(SYSTEM, f"note {i:04} " + "n" * 40)
    writer.system("finished: failed")
    writer.close()
    text = path.read_text()
    assert len(text.encode()) < 300 + 200
    assert "note 0049" not in text
    assert "finished: failed" in text


def test_a_line_without_an_end_is_cut_into_lines_of_64_kib(tmp_path):
    path = tmp_path / "run.log"
    writer = LogWriter(path)
    writer.write(STDOUT, "y" * (MAX_LINE_CHARS * 2 + 10))
    writer.close()
    lengths = [len(text) for _, _, text in read_lines(path)]
    assert lengths == [MAX_LINE_CHARS, MAX_LINE_CHARS, 10]


def test_a_log_that_cannot_be_written_says_so_and_never_raises(tmp_path):
    path = tmp_path / "run.log"
    path.symlink_to("/dev/full")  # every write fails as on a full disk: ENOSPC
    writer = LogWriter(path)
    writer.write(STDOUT, "lost")
    writer.system("also lost")
    writer.close()
    assert writer.failure is not None
    assert writer.failure.errno == errno.ENOSPC


def test_tail_reads_whole_lines_as_they_come_and_numbers_them(tmp_path):
    path = tmp_path / "run.log"
    tail = LogTail(path)
    assert tail.read() == []  # no file yet
    path.write_text("t1 O one\nt2 E two\nt3 O thr")
    assert tail.read() == [(1, "t1", "O", "one"), (2, "t2", "E", "two")]
    assert tail.read() == []  # the half line waits
    with open(path, "a") as log:
        log.write("ee\n")
    assert tail.read() == [(3, "t3", "O", "three")]


def test_tail_seek_resumes_after_a_given_line(tmp_path):
    path = tmp_path / "run.log"
    path.write_text("".join(f"t{i} O line {i}\n" for i in range(1, 6)))
    tail = LogTail(path)
    tail.seek(3)
    assert [seq for seq, *_ in tail.read()] == [4, 5]
    beyond = LogTail(path)
    beyond.seek(99)
    assert beyond.read() == []
    assert beyond.seq == 5


def test_a_carriage_return_stays_inside_its_line(tmp_path):
    path = tmp_path / "run.log"
    writer = LogWriter(path)
    writer.write(STDOUT, "10%\r50%\r100%")
    writer.write(STDOUT, "done")
    writer.close()
    tail = LogTail(path)
    assert [(seq, text) for seq, _, _, text in tail.read()] == [(1, "10%\r50%\r100%"), (2, "done")]
    resumed = LogTail(path)
    resumed.seek(1)
    assert [seq for seq, *_ in resumed.read()] == [2]


def test_a_published_log_numbers_its_lines_like_the_file(tmp_path, monkeypatch):
    from runs_app import live

    pushed = []
    monkeypatch.setattr(live, "line", lambda run, seq, ts, stream, text: pushed.append((seq, text)))
    path = tmp_path / "run.log"
    first = LogWriter(path, publish_as="run-1")
    first.write(STDOUT, "one")
    first.system("worker died")
    first.close()
    # A re-attached worker opens the log again and numbers on.
    second = LogWriter(path, max_bytes=len(path.read_bytes()) + 60, publish_as="run-1")
    second.write(STDOUT, "three")
    second.write(STDOUT, "x" * 100)  # over the cap: the truncation note takes its place
    second.write(STDOUT, "dropped")
    second.close()
    assert pushed == [
        (1, "one"),
        (2, "worker died"),
        (3, "three"),
        (4, pushed[3][1]),
        (5, "2 line(s) were not kept"),
    ]
    assert "reached LOG_MAX_SIZE_MB" in pushed[3][1]
    assert [(seq, text) for seq, _, _, text in LogTail(path).read()] == pushed
