"""A run's log and samples as the database holds them (runs_app.models.chunk): storing
ranges of lines, and reading them back by sequence number from any process on any node.

A stored line is `timestamp stream text` (runs_app.logs); its sequence number is its place
in the log, counted from 1, which the live viewer and the API's cursor resume from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from django.db import IntegrityError, transaction
from django.db.models import Max, Sum

from runs_app.models.chunk import LogChunk, LogText, pack, unpack

# A chunk holds at most this much (uncompressed): a reader resuming near the end of a big
# log decompresses little, and a row stays small.
CHUNK_BYTES = 256 * 1024
# How many chunks one read brings at most (a viewer catching up reads in steps).
READ_CHUNKS = 4

Line = tuple[int, str, str, str]  # (seq, timestamp, stream, text)


def parse_record(record: str) -> tuple[str, str, str]:
    """(timestamp, stream, text) of one stored record."""
    timestamp, stream, text = [*record.rstrip("\n").split(" ", 2), "", ""][:3]
    return timestamp, stream, text


def store_lines(run_id: int, first_seq: int, records: list[bytes]) -> None:
    """Store records (each `timestamp stream text\\n`, numbered from `first_seq`) as chunks,
    with their text for the search across runs, in one transaction: a range is stored whole
    or not at all."""
    batches, batch, size, seq = [], [], 0, first_seq
    for record in records:
        if batch and size + len(record) > CHUNK_BYTES:
            batches.append((seq, batch, size))
            seq, batch, size = seq + len(batch), [], 0
        batch.append(record)
        size += len(record)
    if batch:
        batches.append((seq, batch, size))
    with transaction.atomic():
        LogChunk.objects.bulk_create(
            _chunk(run_id, LogChunk.Kind.LINES, seq, batch, size) for seq, batch, size in batches
        )
        LogText.objects.bulk_create(
            LogText(run_id=run_id, first_seq=seq, text=searchable_text(batch))
            for seq, batch, _ in batches
        )


# Terminal control sequences (colours: CSI …m; titles and links: OSC … BEL/ST): the page
# shows their effect, not them, so a search must not need them either. NUL goes too:
# PostgreSQL's text cannot hold it (a line with one must not cost the chunk its storing).
CONTROL_SEQUENCES = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-_])|\x00"
)


def searchable_text(records: list[bytes]) -> str:
    """The text of records as people read it, a line each: without their timestamps,
    streams and terminal control sequences."""
    return "\n".join(
        CONTROL_SEQUENCES.sub("", parse_record(record.decode("utf-8", errors="replace"))[2])
        for record in records
    )


def store_new_lines(run_id: int, first_seq: int, records: list[bytes]) -> None:
    """Store records numbered from `first_seq`, leaving out those already stored (by a
    spool shipped twice: a worker that died between storing and emptying it)."""
    try:
        store_lines(run_id, first_seq, records)
    except IntegrityError:
        stored = extent(run_id)[0]
        skip = max(0, stored + 1 - first_seq)
        if skip < len(records):
            store_lines(run_id, first_seq + skip, records[skip:])


def _chunk(run_id: int, kind: str, first_seq: int, items: list[bytes], size: int) -> LogChunk:
    return LogChunk(
        run_id=run_id,
        kind=kind,
        first_seq=first_seq,
        last_seq=first_seq + len(items) - 1,
        size=size,
        data=pack(b"".join(items)),
    )


def extent(run_id: int, kind: str = LogChunk.Kind.LINES) -> tuple[int, int]:
    """(the last stored sequence number, the stored bytes) of a run's lines or samples."""
    found = LogChunk.objects.filter(run_id=run_id, kind=kind).aggregate(
        last=Max("last_seq"), size=Sum("size")
    )
    return found["last"] or 0, found["size"] or 0


def _chunk_lines(first_seq: int, data) -> Iterator[Line]:
    text = unpack(data).decode("utf-8", errors="replace")
    for offset, record in enumerate(text.split("\n")[:-1]):
        yield (first_seq + offset, *parse_record(record))


def lines_after(run_id: int, after: int, max_chunks: int = READ_CHUNKS) -> list[Line]:
    """The stored lines numbered after `after`, from at most `max_chunks` chunks."""
    chunks = (
        LogChunk.objects.filter(run_id=run_id, kind=LogChunk.Kind.LINES, last_seq__gt=after)
        .order_by("first_seq")
        .values_list("first_seq", "data")[:max_chunks]
    )
    return [line for first, data in chunks for line in _chunk_lines(first, data) if line[0] > after]


def all_lines(run_id: int) -> Iterator[Line]:
    """Every stored line, read a few chunks at a time (a download of a big log)."""
    after = 0
    while batch := lines_after(run_id, after):
        yield from batch
        after = batch[-1][0]


def log_text(run_id: int) -> str:
    """The whole stored log as records (`timestamp stream text\\n` each)."""
    return "".join(f"{stamp} {stream} {text}\n" for _, stamp, stream, text in all_lines(run_id))


class LogTail:
    """Reads a run's stored log as it grows, from any process: `read()` gives the lines
    after the cursor (a few chunks at a time; call again for more), `seek(after)` moves the
    cursor to just past line `after` (or the last stored line, if fewer)."""

    def __init__(self, run_id: int, chunks_per_read: int = READ_CHUNKS) -> None:
        self.run_id = run_id
        self.seq = 0
        self.chunks_per_read = chunks_per_read

    def read(self) -> list[Line]:
        lines = lines_after(self.run_id, self.seq, self.chunks_per_read)
        if lines:
            self.seq = lines[-1][0]
        return lines

    def seek(self, after: int) -> None:
        self.seq = min(after, extent(self.run_id)[0])


def last_timestamps(run_id: int) -> dict[str, str]:
    """The newest timestamp stored per stream (O, E): where a re-attached follower resumes,
    whichever node stored them."""
    latest: dict[str, str] = {}
    for _, stamp, stream, _ in all_lines(run_id):  # once per re-attach; logs are capped
        if stream in ("O", "E"):
            latest[stream] = stamp
    return latest


def last_system_line(run_id: int) -> str:
    """The text of the newest Fast-Flow line among the last stored chunks ("" when none)."""
    chunks = (
        LogChunk.objects.filter(run_id=run_id, kind=LogChunk.Kind.LINES)
        .order_by("-first_seq")
        .values_list("first_seq", "data")[:2]
    )
    for first, data in chunks:
        for _, _, stream, text in reversed(list(_chunk_lines(first, data))):
            if stream == "S":
                return text
    return ""


# --- samples -------------------------------------------------------------------------------


def store_samples(run_id: int, first_seq: int, samples: list[dict]) -> None:
    records = [(json.dumps(sample) + "\n").encode() for sample in samples]
    _chunk(run_id, LogChunk.Kind.SAMPLES, first_seq, records, sum(map(len, records))).save()


def stored_sample_count(run_id: int) -> int:
    chunks = LogChunk.objects.filter(run_id=run_id, kind=LogChunk.Kind.SAMPLES)
    return sum(last - first + 1 for first, last in chunks.values_list("first_seq", "last_seq"))


def samples_after(run_id: int, after: int) -> tuple[list[dict], int]:
    """Samples stored in chunks numbered after `after`, and the last number read."""
    chunks = (
        LogChunk.objects.filter(run_id=run_id, kind=LogChunk.Kind.SAMPLES, last_seq__gt=after)
        .order_by("first_seq")
        .values_list("last_seq", "data")
    )
    samples, last = [], after
    for last_seq, data in chunks:
        samples += [json.loads(line) for line in unpack(data).decode().split("\n")[:-1]]
        last = max(last, last_seq)
    return samples, last


def thin_samples(run_id: int) -> int:
    """Keep every other stored sample, in one new chunk numbered after the old ones (which
    go): readers that follow by number see it as new and skip what they have by time.
    Returns how many are kept."""
    with transaction.atomic():
        old = LogChunk.objects.select_for_update().filter(run_id=run_id, kind=LogChunk.Kind.SAMPLES)
        samples, last = samples_after(run_id, 0)
        kept = samples[1::2]
        old.delete()
        if kept:
            store_samples(run_id, last + 1, kept)
    return len(kept)
