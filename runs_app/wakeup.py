"""Waking workers the moment runs are claimed for them (runs_app.supervisor).

`announce()` is called after runs were claimed (or released) for a follower; a worker's
`Listener.wait()` returns then. In one process an event does it at once; across processes
PostgreSQL's LISTEN/NOTIFY (delivered when the claim commits), else Redis's
publish/subscribe when REDIS_URL is set, else (SQLite: one machine) a datagram to each
worker's socket in DATA_DIR/wakeup. Workers still look every few seconds, so a missed
notification (a listener reconnecting) only delays, never loses, a run.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import uuid
from pathlib import Path

import psycopg
import redis
from django.conf import settings
from django.db import DatabaseError, connection, connections

from runs_app.loops import Loop, Threads

logger = logging.getLogger(__name__)

CHANNEL = "fastflow_runs"
# With a notification channel: a look anyway this often (a notification lost meanwhile).
CHANNEL_FALLBACK_SECONDS = 2.0
RECONNECT_SECONDS = 1.0
# A unix socket's path must fit in sockaddr_un (108 bytes with its terminator).
SOCKET_PATH_MAX = 100

_listeners: set[threading.Event] = set()
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
    for event in list(_listeners):
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


class Listener:
    """What a worker waits on between its looks for claimed runs."""

    def __init__(self, threads: Threads | None = None) -> None:
        self.event = threading.Event()
        self.closed = threading.Event()
        self.kind = channel()
        self.listening = Loop("run wake-ups")
        _listeners.add(self.event)
        self.socket: socket.socket | None = None
        self.listen = {
            "postgresql": self._listen_postgresql,
            "redis": self._listen_redis,
            "socket": self._listen_socket,
        }.get(self.kind)
        if self.listen is not None:
            if self.kind == "socket":
                self.socket = self._bind_socket()
            if threads is not None:
                threads.add("run-wakeups", self.keep, [self.listening])
            else:
                threading.Thread(target=self.keep, name="run-wakeups", daemon=True).start()

    @property
    def fallback_seconds(self) -> float:
        return CHANNEL_FALLBACK_SECONDS if self.kind else settings.Q_CLUSTER["poll"]

    def wait(self) -> None:
        self.event.wait(self.fallback_seconds)
        self.event.clear()

    def wake(self) -> None:
        self.event.set()

    def close(self) -> None:
        self.closed.set()
        _listeners.discard(self.event)
        self.event.set()
        if self.socket is not None:
            with contextlib.suppress(OSError):
                Path(self.socket.getsockname()).unlink(missing_ok=True)
            self.socket.close()

    def _bind_socket(self) -> socket.socket:
        """Bound before the listener returns: an announcement right after is not missed."""
        folder = socket_dir()
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)  # only the instance's own processes may knock
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listening.bind(str(folder / f"{uuid.uuid4().hex[:8]}.sock"))
        listening.settimeout(1.0)
        return listening

    def keep(self) -> None:
        """Listen until closed; a connection lost (the database or Redis restarted) is
        made again a second later. Not in turns: listening is one long wait."""
        while not self.closed.is_set():
            try:
                self.listen()
            except (psycopg.Error, redis.RedisError, OSError) as problem:
                self.listening.failed(problem)
                self.event.set()  # a look now: a notification may have been missed
                self.closed.wait(RECONNECT_SECONDS)

    def _listen_postgresql(self) -> None:
        params = connections["default"].settings_dict
        with psycopg.connect(
            dbname=params["NAME"],
            user=params.get("USER") or None,
            password=params.get("PASSWORD") or None,
            host=params.get("HOST") or None,
            port=params.get("PORT") or None,
            autocommit=True,
        ) as listening:
            listening.execute(f"LISTEN {CHANNEL}")
            self.listening.succeeded()
            while not self.closed.is_set():
                for _ in listening.notifies(timeout=1.0, stop_after=1):
                    self.event.set()

    def _listen_socket(self) -> None:
        while not self.closed.is_set():
            try:
                self.socket.recv(64)
            except TimeoutError:
                continue
            except OSError:
                if self.closed.is_set():
                    return  # closed under the reader
                raise
            self.event.set()

    def _listen_redis(self) -> None:
        subscriber = redis.Redis.from_url(settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)
        with contextlib.closing(subscriber):
            subscriber.subscribe(CHANNEL)
            self.listening.succeeded()
            while not self.closed.is_set():
                if subscriber.get_message(timeout=1.0):
                    self.event.set()
