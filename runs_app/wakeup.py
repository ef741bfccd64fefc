"""Waking workers the moment runs are claimed for them (runs_app.worker.supervisor).

`announce()` is called after runs were claimed (or released) for a follower; a worker's
listener (runs_app.worker.listener) wakes then. In one process an event does it at once;
across processes PostgreSQL's LISTEN/NOTIFY (delivered when the claim commits), else
Redis's publish/subscribe when REDIS_URL is set, else (SQLite: one machine) a datagram to
each worker's socket in DATA_DIR/wakeup. Workers still look every few seconds, so a missed
notification (a listener reconnecting) only delays, never loses, a run.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from pathlib import Path

import redis
from django.conf import settings
from django.db import DatabaseError, connection, connections

logger = logging.getLogger(__name__)

CHANNEL = "fastflow_runs"
# A unix socket's path must fit in sockaddr_un (108 bytes with its terminator).
SOCKET_PATH_MAX = 100

# This process's listeners (runs_app.worker.listener): woken directly.
listeners: set[threading.Event] = set()
_publisher: redis.Redis | None = None


def channel() -> str:
    """How other processes are told: "postgresql", "redis", "socket" or "" (they look
    every few seconds: DATA_DIR's path is too long for a socket)."""
    if connections["default"].vendor == "postgresql":
        return "postgresql"
    if settings.REDIS_URL:
        return "redis"
    return "socket" if len(str(socket_dir())) + 14 <= SOCKET_PATH_MAX else ""


def socket_dir() -> Path:
    return Path(settings.DATA_DIR) / "wakeup"


def announce() -> None:
    """Runs wait for a follower: wake this process's listeners and every other worker's."""
    for event in list(listeners):
        event.set()
    kind = channel()
    try:
        if kind == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"NOTIFY {CHANNEL}")
        elif kind == "redis":
            publisher().publish(CHANNEL, b"1")
        elif kind == "socket":
            knock_on_sockets()
    except (DatabaseError, redis.RedisError, OSError) as problem:
        # The workers' own look (fallback) finds the runs a moment later.
        logger.warning("could not wake the workers: %s", problem)


def knock_on_sockets() -> None:
    """One datagram to every worker's socket; a socket nobody listens on any more (its
    worker died) is removed."""
    with (
        contextlib.suppress(FileNotFoundError),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as knocker,
    ):
        knocker.setblocking(False)
        for path in socket_dir().glob("*.sock"):
            try:
                knocker.sendto(b"1", str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)
            except BlockingIOError:
                pass  # its queue is full: it has been woken already


def publisher() -> redis.Redis:
    global _publisher
    if _publisher is None:
        _publisher = redis.Redis.from_url(settings.REDIS_URL)
    return _publisher
