"""Writing a run's log: one record per output line, masked, capped, numbered, and stored in
the database as it is written (runs_app.stored_logs), so any web node shows it.

A record is

    2026-11-21T23:59:59.123456789Z O hello        (O = stdout, E = stderr, S = Fast-Flow)

The timestamp is the container's own (docker's), so a worker that re-attaches to a running
container can ask for exactly the lines after the last one stored: no gaps, no duplicates.
Its sequence number (its place in the log, from 1) is what the live viewer resumes from.

On a worker a run's lines first go to a spool file (`LOGS_DIR/<run id>.log`, each record
prefixed with its number) from which the process's shipper (runs_app.log_shipping) stores
them a fraction of a second later, in insert-only chunks. The spool bridges a database
outage and is emptied once stored; a spool left by a worker that died is stored by the next
follower of the run on that node, or by the worker's start (`ship_leftover_spools`).

Without a run (a warm-up's own output) a LogWriter writes a plain file of records.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from runs_app import live, log_shipping, stored_logs
from runs_app.models import PipelineRun

STDOUT, STDERR, SYSTEM = "O", "E", "S"
TRUNCATION_NOTE = (
    "the log reached LOG_MAX_SIZE_MB={mb:g}: further output is dropped and the run is stopped"
)
# Fast-Flow's own lines after the cap (how the run ended) fit in this.
SYSTEM_RESERVE_BYTES = 64 * 1024
# Output without a newline is cut into lines of at most this many characters: a pipeline
# printing a gigabyte without a newline is never held whole.
MAX_LINE_CHARS = 64 * 1024
# What `tail()` keeps of the newest lines (an install failure is explained from them).
RECENT_LINES = 400
# A spool all stored is emptied once it is this big (so it is not emptied on every line).
SPOOL_EMPTY_BYTES = 1024 * 1024


def spool_path(public_id) -> Path:
    """Where a worker spools a run's lines (and, beside it, a models run's artifact files)."""
    return Path(settings.LOGS_DIR) / f"{public_id}.log"


def utc_timestamp(moment: datetime | None = None) -> str:
    """Docker's RFC 3339 form with nanoseconds, so our lines sort with the container's."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class MetricsWriter:
    """Keeps a run's CPU/memory samples: each goes to live viewers at once and is stored
    with the next shipment. Samples are a nicety: while the database is away at most
    MAX_PENDING_SAMPLES wait (the oldest go first); nothing here stops a run.

    A run keeps at most METRICS_MAX_SAMPLES samples whatever its length: when full they are
    thinned to every other one and from then on only every other sample is kept, and so
    on — a daemon running for months keeps its whole history at a coarser grain, in
    bounded space."""

    MAX_PENDING_SAMPLES = 3600

    def __init__(self, run_id: int, publish_as: str | None = None, background: bool = True) -> None:
        self.run_id = run_id
        self.publish_as = publish_as
        self.lock = threading.Lock()
        self.ship_lock = threading.Lock()
        self.pending: deque[dict] = deque(maxlen=self.MAX_PENDING_SAMPLES)
        self.last_seq = stored_logs.extent(run_id, "samples")[0]  # a re-attached follower
        self.stored = stored_logs.stored_sample_count(run_id)
        self.stride = 1  # keep one sample in `stride`
        self.seen = 0
        self.closing = False
        if background:
            log_shipping.shipper().add(self)

    def sample(self, cpu_percent: float | None, memory_bytes: int | None) -> None:
        record = {"t": utc_timestamp(), "cpu": cpu_percent, "mem": memory_bytes}
        with self.lock:
            if self.closing:
                return  # a sampler thread that outlived its run
            self.seen += 1
            if self.seen % self.stride == 0:
                self.pending.append(record)
        if self.publish_as:
            live.sample(self.publish_as, record)

    def ship(self) -> bool:
        """Store the samples taken since the last shipment (True: nothing is left)."""
        with self.ship_lock:
            with self.lock:
                batch = list(self.pending)
                self.pending.clear()
            if not batch:
                return True
            try:
                stored_logs.store_samples(self.run_id, self.last_seq + 1, batch)
            except BaseException:
                with self.lock:  # back in front of what came meanwhile; the newest kept
                    self.pending = deque([*batch, *self.pending], maxlen=self.pending.maxlen)
                raise
            self.last_seq += len(batch)
            self.stored += len(batch)
            if self.stored >= settings.METRICS_MAX_SAMPLES:
                self.stored = stored_logs.thin_samples(self.run_id)
                self.last_seq = stored_logs.extent(self.run_id, "samples")[0]
                self.stride *= 2
            return True

    def close(self) -> None:
        with self.lock:
            self.closing = True
        log_shipping.shipper().finish(self)

    def discard_spool(self) -> None:
        """(Samples have no spool.)"""


class LogWriter:
    """Appends lines to a run's log; thread-safe; the log never grows past its cap.

    Everything the run prints counts against `max_bytes` (LOG_MAX_SIZE_MB), its marker lines
    too; past the cap a note is written once, further output is dropped (and counted), and
    `overflowed` tells the follower, which stops the run. Fast-Flow's own lines
    (`system()`) may use a small reserve beyond the cap, so the run's end is always told.
    A line longer than MAX_LINE_CHARS is cut into several.

    A write that fails (the worker's disk full, the folder gone) sets `failure`; the writer
    then stops writing, and the follower ends the run with that reason.

    With `run_id` the file is the run's spool and its lines are stored in the database
    (`ship()`; the process's shipper calls it a few times a second unless `background` is
    off, and `close()` ships what is left). A writer for a run that already has stored lines
    (a re-attached follower) numbers on from them.

    With `publish_as` (the run's public id) every written line also goes to the run's live
    viewers through the channel layer, with its sequence number (see runs_app.live).
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int | None = None,
        mask: Callable[[str], str] | None = None,
        publish_as: str | None = None,
        run_id: int | None = None,
        background: bool = True,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes if max_bytes is not None else settings.LOG_MAX_SIZE_MB * 1024**2
        # The seam for secret masking: every line passes through it before it is written.
        self.mask = mask or (lambda text: text)
        self.lock = threading.Lock()
        self.ship_lock = threading.Lock()
        self.publish_as = publish_as
        self.run_id = run_id
        self.failure: OSError | None = None
        self.dropped_lines = 0
        self.recent: deque[str] = deque(maxlen=RECENT_LINES)
        self.closing = False
        path.parent.mkdir(parents=True, exist_ok=True)
        if run_id is None:
            self.file = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            self.size = self.file.tell()
            self.seq = count_lines(path) if publish_as and self.size else 0
            self.last_system = ""
        else:
            # What an earlier follower on this node spooled but never stored goes first.
            ship_spool(run_id, path)
            self.seq, self.size = stored_logs.extent(run_id)
            self.last_system = stored_logs.last_system_line(run_id)
            self.file = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            # Its own handle on its own spool: shipping reads this file, even when a later
            # follower of the run on this node has made a new one under the same name.
            self.reader = open(path, "rb")  # noqa: SIM115
            self.inode = os.fstat(self.reader.fileno()).st_ino
            self.spooled = 0  # bytes in the spool file
            self.shipped = 0  # of which stored
            if background:
                log_shipping.shipper().add(self)
        self.overflowed = self.size >= self.max_bytes

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
        spooled = record if self.run_id is None else f"{self.seq + 1} {record}"
        try:
            self.file.write(spooled)
            self.file.flush()  # readable by another process (the shipper) at once
        except OSError as problem:
            self.failure = problem
            return
        size = len(record.encode())
        self.size += size
        self.seq += 1
        timestamp, stream, text = stored_logs.parse_record(record)
        self.recent.append(text)
        if stream == SYSTEM:
            self.last_system = text
        if self.run_id is not None:
            self.spooled += size + len(spooled) - len(record)  # (the number is ASCII)
        if self.publish_as:
            live.line(self.publish_as, self.seq, timestamp, stream, text)

    def tail(self) -> list[str]:
        """The texts of its last lines (at most RECENT_LINES), as written."""
        with self.lock:
            return list(self.recent)

    def ship(self) -> bool:
        """Store the spooled lines not stored yet (True: nothing is left). Raises the
        database's error when it is away; the lines stay spooled for the next try."""
        if self.run_id is None:
            return True
        with self.ship_lock:
            with self.lock:
                end = self.spooled
            if end == self.shipped:
                return True
            if self.reader.closed:
                return True  # (discarded: all of it stored)
            data = os.pread(self.reader.fileno(), end - self.shipped, self.shipped)
            first, records = split_spool(data)
            stored_logs.store_new_lines(self.run_id, first, records)
            with self.lock:
                self.shipped = end
                full = self.spooled >= SPOOL_EMPTY_BYTES
                if full and self.shipped == self.spooled and not self.closing:
                    # All of it stored: start the spool anew (its file stays small).
                    with contextlib.suppress(OSError):
                        os.ftruncate(self.file.fileno(), 0)
                        self.spooled = self.shipped = 0
            return True

    def close(self) -> None:
        """The last lines, then the log's end: stored now if the database is there, else
        by the shipper as soon as it is back (the spool is kept until then)."""
        with self.lock:
            if self.dropped_lines and self.overflowed:
                self._append(
                    f"{utc_timestamp()} {SYSTEM} {self.dropped_lines} line(s) were not kept\n"
                )
            self.closing = True
            try:
                self.file.close()
            except OSError as problem:  # the last buffered bytes could not be written
                self.failure = self.failure or problem
        if self.run_id is not None:
            log_shipping.shipper().finish(self)

    def discard_spool(self) -> None:
        """Everything is stored: the spool goes (if the file of that name is still this
        writer's own)."""
        if self.run_id is None:
            return
        with self.ship_lock:
            if self.reader.closed:
                return
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self.inode:
                    self.path.unlink()
            self.reader.close()


def split_spool(data: bytes) -> tuple[int, list[bytes]]:
    """(the first number, the records without their numbers) of complete spooled lines;
    a spool is written by one writer, so its numbers follow each other."""
    lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
    numbered = [line.split(b" ", 1) for line in lines]
    numbered = [pair for pair in numbered if len(pair) == 2 and pair[0].isdigit()]
    if not numbered:
        return 0, []
    return int(numbered[0][0]), [record + b"\n" for _, record in numbered]


def ship_spool(run_id: int, path: Path) -> None:
    """Store what a spool holds beyond the run's stored lines (a worker that died before
    storing them), then remove it. The database's errors are raised."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return  # never ours (a link, a device): nothing to store
        data = path.read_bytes()
    except FileNotFoundError:
        return
    first, records = split_spool(data)
    if records:
        stored_logs.store_new_lines(run_id, first, records)
    path.unlink(missing_ok=True)


def ship_leftover_spools(idle_seconds: float = 60.0) -> int:
    """Spools of this node's runs that no writer holds any more (a worker that died, or
    closed its log while the database was away and then stopped): stored, then removed.
    Only spools of final runs (or of runs that are gone), untouched for `idle_seconds`: a
    running run's spool is its next follower's. Returns how many were handled."""
    folder = Path(settings.LOGS_DIR)
    if not folder.is_dir():
        return 0
    handled = 0
    now = datetime.now(UTC).timestamp()
    for path in folder.glob("*.log"):
        try:
            if now - path.stat().st_mtime < idle_seconds:
                continue
        except FileNotFoundError:
            continue
        run = PipelineRun.objects.filter(public_id=_uuid_or_none(path.stem)).first()
        if run is not None and run.status not in PipelineRun.FINAL_STATUSES:
            continue
        if run is not None:
            ship_spool(run.pk, path)
        path.unlink(missing_ok=True)
        shutil.rmtree(path.with_suffix(".artifacts"), ignore_errors=True)  # unfinished pieces
        handled += 1
    return handled


def _uuid_or_none(text: str):
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def count_lines(path: Path) -> int:
    """Lines already in a log file (a warm-up's, written again)."""
    with open(path, "rb") as log:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: log.read(1 << 20), b""))


def read_lines(path: Path) -> list[tuple[str, str, str]]:
    """The records of a plain log file (a warm-up's)."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8", errors="replace") as log:
        return [stored_logs.parse_record(line) for line in log]
