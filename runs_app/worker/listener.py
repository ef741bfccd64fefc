"""What a worker waits on between its looks for claimed runs: woken the moment runs are
claimed for it (runs_app.wakeup.announce) — in the same process by an event, across
processes by PostgreSQL's LISTEN, Redis's subscribe, or a datagram on its own socket in
DATA_DIR/wakeup. A listener that lost its connection makes it again a second later, and
looks meanwhile: a missed notification only delays a run, never loses it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from pathlib import Path

import psycopg
import redis
from django.conf import settings
from django.db import connections

from runs_app.wakeup import CHANNEL, channel, listeners, socket_dir
from runs_app.worker.loops import Loop, Threads

# With a notification channel: a look anyway this often (a notification lost meanwhile).
CHANNEL_FALLBACK_SECONDS = 2.0
RECONNECT_SECONDS = 1.0


class Listener:
    """What a worker waits on between its looks for claimed runs."""

    def __init__(self, threads: Threads | None = None) -> None:
        self.event = threading.Event()
        self.closed = threading.Event()
        self.kind = channel()
        self.listening = Loop("run wake-ups")
        listeners.add(self.event)
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
        listeners.discard(self.event)
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
