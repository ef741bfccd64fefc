"""Run logs are files first: one line per output line, appended and flushed as it arrives.

Format of `LOGS_DIR/<run public id>.log`, one record per line:

    2026-11-21T23:59:59.123456789Z O hello        (O = stdout, E = stderr, S = Fast-Flow)

The timestamp is the container's own (docker's), so a worker that re-attaches to a running
container can ask for exactly the lines after the last one written: no gaps, no duplicates.
Line number = sequence number, which the live viewer uses to resume.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from runs_app import live

STDOUT, STDERR, SYSTEM = "O", "E", "S"
TRUNCATION_NOTE = (
    "the log reached LOG_MAX_SIZE_MB={mb:g}: further output is dropped and the run is stopped"
)
# Fast-Flow's own lines after the cap (how the run ended) fit in this.
SYSTEM_RESERVE_BYTES = 64 * 1024
# Output without a newline is cut into lines of at most this many characters: a pipeline
# printing a gigabyte without a newline is never held whole.
MAX_LINE_CHARS = 64 * 1024


def metrics_path(log_path: Path | str) -> Path:
    """Live CPU/memory samples of a run, one JSON object per line, next to its log."""
    return Path(log_path).with_suffix(".metrics")


class MetricsWriter:
    """Appends a run's CPU/memory samples. Samples are a nicety: a write that fails (a full
    disk) stops the writing, never the run or its follower (the log says what matters).

    The file is capped at METRICS_MAX_SAMPLES lines whatever the run's length: when full it
    is thinned to every other sample (written anew and swapped in) and from then on only
    every other sample is kept, and so on — a daemon running for months keeps its whole
    history at a coarser grain, in bounded space. Live viewers get every sample."""

    def __init__(self, path: Path, publish_as: str | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self.lock = threading.Lock()
        self.publish_as = publish_as
        self.failed = False
        self.lines = count_lines(path)  # a re-attached follower continues the file
        self.stride = 1  # keep one sample in `stride`
        self.seen = 0

    def sample(self, cpu_percent: float | None, memory_bytes: int | None) -> None:
        record = {"t": utc_timestamp(), "cpu": cpu_percent, "mem": memory_bytes}
        with self.lock:
            if self.file.closed or self.failed:
                return  # a sampler thread that outlived its run, or a full disk
            self.seen += 1
            if self.seen % self.stride == 0:
                try:
                    self.file.write(json.dumps(record) + "\n")
                    self.file.flush()
                    self.lines += 1
                    if self.lines >= settings.METRICS_MAX_SAMPLES:
                        self._thin()
                except OSError:
                    self.failed = True
        if self.publish_as:
            live.sample(self.publish_as, record)

    def _thin(self) -> None:
        """Keep every other sample, in a new file swapped in at once (readers re-open)."""
        self.file.close()
        with open(self.path, encoding="utf-8") as current:
            kept = [line for number, line in enumerate(current) if number % 2 == 1]
        fresh = self.path.with_suffix(".metrics.new")
        fresh.write_text("".join(kept), encoding="utf-8")
        fresh.replace(self.path)
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.lines = len(kept)
        self.stride *= 2

    def close(self) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.file.close()


def log_path_for(public_id) -> Path:
    return Path(settings.LOGS_DIR) / f"{public_id}.log"


def utc_timestamp(moment: datetime | None = None) -> str:
    """Docker's RFC 3339 form with nanoseconds, so our lines sort with the container's."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class LogWriter:
    """Appends lines to a run's log; thread-safe; the file never grows past its cap.

    Everything the run prints counts against `max_bytes` (LOG_MAX_SIZE_MB), its marker lines
    too; past the cap a note is written once, further output is dropped (and counted), and
    `overflowed` tells the follower, which stops the run. Fast-Flow's own lines
    (`system()`) may use a small reserve beyond the cap, so the run's end is always told.
    A line longer than MAX_LINE_CHARS is cut into several.

    A write that fails (disk full, the folder gone) sets `failure`; the writer then stops
    writing, and the follower ends the run with that reason.

    With `publish_as` (the run's public id) every written line also goes to the run's live
    viewers through the channel layer, with its sequence number (see runs_app.live).
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int | None = None,
        mask: Callable[[str], str] | None = None,
        publish_as: str | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes if max_bytes is not None else settings.LOG_MAX_SIZE_MB * 1024**2
        # The seam for secret masking: every line passes through it before it is written.
        self.mask = mask or (lambda text: text)
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.size = self.file.tell()
        self.overflowed = self.size >= self.max_bytes
        self.failure: OSError | None = None
        self.dropped_lines = 0
        self.publish_as = publish_as
        self.seq = count_lines(path) if publish_as and self.size else 0

    def write(self, stream: str, text: str, timestamp: str | None = None) -> None:
        """A line the run printed (stdout, stderr, or a marker the follower understood)."""
        self._write(stream, text, timestamp, own=False)

    def system(self, text: str) -> None:
        """A line of Fast-Flow's own (it may use the reserve beyond the cap)."""
        self._write(SYSTEM, text, None, own=True)

    def _write(self, stream: str, text: str, timestamp: str | None, own: bool) -> None:
        stamp = timestamp or utc_timestamp()
        masked = self.mask(text)
        pieces = [masked[i : i + MAX_LINE_CHARS] for i in range(0, len(masked), MAX_LINE_CHARS)]
        with self.lock:
            for piece in pieces or [""]:
                record = f"{stamp} {stream} {piece}\n"
                limit = self.max_bytes + (SYSTEM_RESERVE_BYTES if own else 0)
                if self.size + len(record.encode()) > limit:
                    self.dropped_lines += 1
                    if not self.overflowed and not own:
                        self.overflowed = True
                        note = TRUNCATION_NOTE.format(mb=self.max_bytes / 1024**2)
                        self._append(f"{utc_timestamp()} {SYSTEM} {note}\n")
                    continue
                self._append(record)

    def _append(self, record: str) -> None:
        if self.failure is not None:
            return
        try:
            self.file.write(record)
            self.file.flush()  # readable by another process at once
        except OSError as problem:
            self.failure = problem
            return
        self.size += len(record.encode())
        self.seq += 1
        if self.publish_as:
            live.line(self.publish_as, self.seq, *parse_line(record))

    def tail(self, max_bytes: int = 64 * 1024) -> list[str]:
        """The texts of its last lines (at most `max_bytes` of the file), as written."""
        with self.lock:
            try:
                self.file.flush()
                with open(self.path, "rb") as log:
                    log.seek(max(0, self.size - max_bytes))
                    chunk = log.read(max_bytes)
            except OSError:
                return []
        lines = chunk.decode("utf-8", errors="replace").split("\n")[1:-1]
        return [parse_line(line)[2] for line in lines]

    def close(self) -> None:
        with self.lock:
            if self.dropped_lines and self.overflowed:
                self._append(
                    f"{utc_timestamp()} {SYSTEM} {self.dropped_lines} line(s) were not kept\n"
                )
            try:
                self.file.close()
            except OSError as problem:  # the last buffered bytes could not be written
                self.failure = self.failure or problem


def count_lines(path: Path) -> int:
    """Lines already in a log (a re-attached worker numbers on from there)."""
    with open(path, "rb") as log:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: log.read(1 << 20), b""))


def last_timestamps(path: Path) -> dict[str, str]:
    """The newest timestamp written per stream (O, E): where a re-attached follower resumes."""
    latest: dict[str, str] = {}
    if not path.exists():
        return latest
    with open(path, "rb") as log:
        # Reading from the end would be faster; logs are capped, and this runs once per
        # re-attach, so a plain scan keeps it simple and exact.
        for raw in log:
            parts = raw.split(b" ", 2)
            if len(parts) >= 2 and parts[1] in (b"O", b"E"):
                latest[parts[1].decode()] = parts[0].decode()
    return latest


def last_system_line(path: Path) -> str:
    """The text of the newest Fast-Flow line near the end of a log ("" when none)."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, 2) - SYSTEM_RESERVE_BYTES))
            tail = log.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    for record in reversed(tail.split("\n")):
        _, stream, text = parse_line(record)
        if stream == SYSTEM:
            return text
    return ""


def parse_line(record: str) -> tuple[str, str, str]:
    """(timestamp, stream, text) of one stored record."""
    timestamp, stream, text = [*record.rstrip("\n").split(" ", 2), "", ""][:3]
    return timestamp, stream, text


def read_lines(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8", errors="replace") as log:
        return [parse_line(line) for line in log]


class LogTail:
    """Reads a log as it grows, whole lines only, numbering them from 1 (the sequence).

    `seek(after)` skips to just past line `after`, so a reconnecting reader gets exactly
    the lines it has not seen.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0  # bytes consumed
        self.seq = 0  # lines consumed

    def read(self) -> list[tuple[int, str, str, str]]:
        """New complete lines as (seq, timestamp, stream, text)."""
        raw_lines, self.offset = read_new_lines(self.path, self.offset)
        lines = []
        for raw in raw_lines:
            self.seq += 1
            lines.append((self.seq, *parse_line(raw)))
        return lines

    def seek(self, after: int) -> None:
        """Consume lines up to and including number `after` (or as many as exist)."""
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                while self.seq < after:
                    line = log.readline()
                    if not line.endswith(b"\n"):
                        return
                    self.offset += len(line)
                    self.seq += 1
        except FileNotFoundError:
            return


def read_new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """The complete lines written after byte `offset`, and the offset after them."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return [], offset
    complete = chunk[: chunk.rfind(b"\n") + 1]
    # Split on newlines only: a progress bar's "\r" is part of its line, and line numbers
    # must agree with everything else that counts b"\n" (seek, the writer's sequence).
    lines = complete.decode("utf-8", errors="replace").split("\n")[:-1]
    return lines, offset + len(complete)
