"""Run logs: the record format, masking, the cap, sequence numbers, and storing them in the
database as insert-only compressed chunks through a spool that survives a dead worker."""

from __future__ import annotations

import errno

import pytest

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.logs import (
    MAX_LINE_CHARS,
    STDERR,
    STDOUT,
    SYSTEM,
    LogWriter,
    read_lines,
    ship_leftover_spools,
    spool_path,
)
from runs_app.models import LogChunk, PipelineRun
from runs_app.stored_logs import CHUNK_BYTES, LogTail, all_lines, last_timestamps
from tests.runs_app.conftest import log_text, run_log

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(make_pipeline, settings, tmp_path) -> PipelineRun:
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0  # nothing executes: the tests write the log
    make_pipeline("p")
    discover()
    return PipelineRun.enqueue(Pipeline.objects.get(name="p"), trigger="manual")


def texts(run: PipelineRun) -> list[str]:
    return [text for *_, text in all_lines(run.pk)]


def test_lines_are_stored_with_timestamp_stream_and_number(run):
    writer = run_log(run)
    writer.write(STDOUT, "hello", "2026-01-01T00:00:00.000000001Z")
    writer.write(STDERR, "oops", "2026-01-01T00:00:00.000000002Z")
    writer.system("note")
    assert texts(run) == []  # spooled: stored with the next shipment
    writer.ship()
    assert [(seq, stream, text) for seq, _, stream, text in all_lines(run.pk)] == [
        (1, STDOUT, "hello"),
        (2, STDERR, "oops"),
        (3, SYSTEM, "note"),
    ]
    writer.close()
    assert log_text(run).startswith("2026-01-01T00:00:00.000000001Z O hello\n")
    assert last_timestamps(run.pk) == {
        "O": "2026-01-01T00:00:00.000000001Z",
        "E": "2026-01-01T00:00:00.000000002Z",
    }
    assert not spool_path(run.public_id).exists()  # all of it stored: the spool is gone


def test_masking_happens_before_the_spool_and_the_database(run):
    writer = run_log(run, mask=lambda text: text.replace("hunter2", "***"))
    writer.write(STDOUT, "password is hunter2")
    assert b"hunter2" not in spool_path(run.public_id).read_bytes()
    writer.close()
    assert texts(run) == ["password is ***"]
    assert all(b"hunter2" not in bytes(chunk.data) for chunk in LogChunk.objects.all())


def test_the_cap_keeps_fast_flow_lines_and_counts_dropped_ones(run):
    writer = run_log(run, max_bytes=200)
    for i in range(20):
        writer.write(STDOUT, f"line {i:04}")
    assert writer.overflowed  # the follower stops the run
    writer.system("finished: failed")
    writer.close()
    text = log_text(run)
    assert "the log reached LOG_MAX_SIZE_MB" in text
    assert "finished: failed" in text
    assert "line(s) were not kept" in text
    assert "line 0019" not in text


def test_lines_the_run_makes_fast_flow_write_count_against_the_cap(run):
    """A pipeline's marker lines (notes) are its output: they cannot pass the cap, while
    Fast-Flow's own lines have a small reserve beyond it."""
    writer = run_log(run, max_bytes=300)
    for i in range(50):
        writer.write(SYSTEM, f"note {i:04} " + "n" * 40)
    writer.system("finished: failed")
    writer.close()
    text = log_text(run)
    assert len(text.encode()) < 300 + 200
    assert "note 0049" not in text
    assert "finished: failed" in text


def test_a_line_without_an_end_is_cut_into_lines_of_64_kib(run):
    writer = run_log(run)
    writer.write(STDOUT, "y" * (MAX_LINE_CHARS * 2 + 10))
    writer.close()
    assert [len(text) for text in texts(run)] == [MAX_LINE_CHARS, MAX_LINE_CHARS, 10]


def test_a_spool_that_cannot_be_written_says_so_and_never_raises(run):
    path = spool_path(run.public_id)
    path.parent.mkdir(parents=True)
    path.symlink_to("/dev/full")  # every write fails as on a full disk: ENOSPC
    writer = run_log(run)
    writer.write(STDOUT, "lost")
    writer.system("also lost")
    writer.close()
    assert writer.failure is not None
    assert writer.failure.errno == errno.ENOSPC


def test_chunks_are_insert_only_compressed_and_bounded(run):
    writer = run_log(run)
    writer.write(STDOUT, "first")
    writer.ship()
    (first,) = LogChunk.objects.filter(run=run)
    before = bytes(first.data)
    for number in range(4000):
        writer.write(STDOUT, f"{number:06} " + "the same words again " * 5)
    writer.close()
    chunks = list(LogChunk.objects.filter(run=run).order_by("first_seq"))
    assert chunks[0].pk == first.pk and bytes(chunks[0].data) == before  # never updated
    assert len(chunks) > 2 and all(chunk.size <= CHUNK_BYTES for chunk in chunks)
    assert [c.first_seq for c in chunks[1:]] == [c.last_seq + 1 for c in chunks[:-1]]
    assert chunks[-1].last_seq == 4001
    assert sum(len(bytes(c.data)) for c in chunks) < sum(c.size for c in chunks) / 5


def test_the_tail_reads_what_is_stored_after_its_cursor(run):
    writer = run_log(run)
    tail = LogTail(run.pk)
    assert tail.read() == []  # nothing yet
    for number in range(1, 6):
        writer.write(STDOUT, f"line {number}", f"t{number}")
    writer.ship()
    assert [seq for seq, *_ in tail.read()] == [1, 2, 3, 4, 5]
    assert tail.read() == []
    writer.write(STDOUT, "10%\r50%\r100%")  # a progress bar's "\r" stays inside its line
    writer.close()
    assert [(seq, text) for seq, _, _, text in tail.read()] == [(6, "10%\r50%\r100%")]
    resumed = LogTail(run.pk)
    resumed.seek(3)
    assert [seq for seq, *_ in resumed.read()] == [4, 5, 6]
    beyond = LogTail(run.pk)
    beyond.seek(99)
    assert beyond.read() == [] and beyond.seq == 6


def test_a_re_attached_writer_numbers_on_and_keeps_the_cap(run, monkeypatch):
    from runs_app import live

    pushed = []
    monkeypatch.setattr(live, "line", lambda run, seq, ts, stream, text: pushed.append((seq, text)))
    first = run_log(run, publish_as="run-1")
    first.write(STDOUT, "one")
    first.system("worker died")
    first.close()
    size = len(log_text(run).encode())
    # A re-attached worker (on any node) opens the log again and numbers on.
    second = run_log(run, max_bytes=size + 60, publish_as="run-1")
    assert second.last_system == "worker died"
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
    assert [(seq, text) for seq, _, _, text in all_lines(run.pk)] == pushed


def test_a_dead_workers_spool_is_stored_once_by_the_next_follower(run):
    """A worker died with lines spooled but not stored (the database was away, or it died
    between two shipments): the run's next follower on the node stores them first, without
    storing twice what was already stored."""
    dead = run_log(run)
    for number in range(1, 4):
        dead.write(STDOUT, f"line {number}")
    dead.ship()
    dead.write(STDOUT, "line 4")
    dead.write(STDOUT, "line 5")
    dead.file.flush()  # (it dies here: no close, no shipment)
    successor = run_log(run)
    successor.write(STDOUT, "line 6")
    successor.close()
    assert texts(run) == [f"line {number}" for number in range(1, 7)]
    assert [seq for seq, *_ in all_lines(run.pk)] == list(range(1, 7))


def test_spools_of_ended_runs_are_stored_and_removed_by_the_sweep(run):
    dead = run_log(run)
    dead.write(STDOUT, "never shipped")
    dead.file.flush()
    path = spool_path(run.public_id)
    assert ship_leftover_spools(idle_seconds=0) == 0  # the run goes on: its follower's
    PipelineRun.objects.filter(pk=run.pk).update(status=PipelineRun.Status.FAILED)
    stray = path.with_name("not-a-run.log")
    stray.write_text("1 t O x\n")
    assert ship_leftover_spools(idle_seconds=0) == 2
    assert texts(run) == ["never shipped"]
    assert not path.exists() and not stray.exists()


def test_a_log_without_a_run_is_a_plain_file(tmp_path):
    """A warm-up's own output: a file of records, nothing stored."""
    path = tmp_path / "warm.log"
    writer = LogWriter(path)
    writer.write(STDOUT, "hello", "2026-01-01T00:00:00.000000001Z")
    assert path.read_text() == "2026-01-01T00:00:00.000000001Z O hello\n"  # flushed per line
    writer.system("done")
    writer.close()
    assert [(stream, text) for _, stream, text in read_lines(path)] == [
        (STDOUT, "hello"),
        (SYSTEM, "done"),
    ]
    assert writer.tail() == ["hello", "done"]
