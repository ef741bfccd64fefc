"""One thread per process stores what its open run logs and samples have gathered, a few
times a second, so every line reaches the database within a fraction of a second of being
written, without any writer ever waiting for the database.

While the database is away the shipper keeps trying (the lines wait in their spools, the
runs go on); a writer that is closed while it is away stays here until all of it is stored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Protocol

from django.db import DatabaseError, close_old_connections, connection

logger = logging.getLogger(__name__)

SHIP_SECONDS = 0.1
RETRY_MAX_SECONDS = 2.0
WARN_EVERY_SECONDS = 60.0


class Shippable(Protocol):
    closing: bool

    def ship(self) -> bool: ...

    def discard_spool(self) -> None: ...


class Shipper:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.writers: list[Shippable] = []
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="log-shipper", daemon=True)
        self.thread.start()

    def add(self, writer: Shippable) -> None:
        with self.lock:
            self.writers.append(writer)

    def finish(self, writer: Shippable) -> None:
        """A closed writer: ship the rest now, from the caller's thread; if the database
        is away, the shipper goes on trying."""
        try:
            writer.ship()
        except DatabaseError:
            close_old_connections()
            logger.warning("the database is unavailable: a closed log is stored when it is back")
            with self.lock:
                if writer not in self.writers:
                    self.writers.append(writer)
            return
        writer.discard_spool()
        with self.lock:
            if writer in self.writers:
                self.writers.remove(writer)

    def _loop(self) -> None:
        delay = SHIP_SECONDS
        warned = 0.0
        while True:
            self.wake.wait(delay)
            self.wake.clear()
            with self.lock:
                writers = list(self.writers)
            if not writers:
                # Nothing to store: a worker without runs holds no connection for it.
                with contextlib.suppress(DatabaseError):
                    connection.close()
                continue
            try:
                for writer in writers:
                    closed = writer.closing  # (read first: lines written before it are shipped)
                    writer.ship()
                    if closed:
                        writer.discard_spool()
                        with self.lock:
                            if writer in self.writers:
                                self.writers.remove(writer)
                delay = SHIP_SECONDS
            except DatabaseError:
                with contextlib.suppress(DatabaseError):
                    connection.close()
                if time.monotonic() - warned >= WARN_EVERY_SECONDS:
                    warned = time.monotonic()
                    logger.warning("the database is unavailable: run logs wait in their spools")
                delay = min(max(delay * 2, 0.25), RETRY_MAX_SECONDS)
            except Exception:
                logger.exception("storing run logs failed; trying again")
                with contextlib.suppress(DatabaseError):
                    connection.close()  # (a connection Django did not see die: a new one)
                delay = RETRY_MAX_SECONDS


_current: Shipper | None = None
_current_lock = threading.Lock()


def shipper() -> Shipper:
    """This process's shipper (a new one after a fork)."""
    global _current
    with _current_lock:
        if _current is None or _current.pid != os.getpid():
            _current = Shipper()
        return _current
