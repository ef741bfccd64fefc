"""Log files: the format, the cap, and reading them as they grow (sequence numbers)."""

from __future__ import annotations

from runs_app.logs import STDERR, STDOUT, SYSTEM, LogTail, LogWriter, last_timestamps, read_lines


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
    writer.system("finished: succeeded")
    writer.close()
    text = path.read_text()
    assert "log truncated" in text
    assert "finished: succeeded" in text
    assert "line(s) were not kept" in text
    assert "line 0019" not in text


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
