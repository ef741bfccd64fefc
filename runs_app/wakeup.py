"""Waking workers the moment runs are claimed for them (runs_app.supervisor).

`announce()` is called after runs were claimed (or released) for a follower; a worker's
`Listener.wait()` returns then. In one process an event does it at once; across processes
PostgreSQL's LISTEN/NOTIFY (delivered when the claim commits), else Redis's
publish/subscribe when REDIS_URL is set. With SQLite and no Redis (one machine) workers
look every WORKER_POLL_SECONDS; with a channel they still look every few seconds, so a
missed notification (a listener reconnecting) only delays, never loses, a run.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import psycopg
import redis
from django.conf import settings
from django.db import DatabaseError, connection, connections

logger = logging.getLogger(__name__)

CHANNEL = "fastflow_runs"
# With a notification channel: a look anyway this often (a notification lost meanwhile).
CHANNEL_FALLBACK_SECONDS = 2.0
RECONNECT_SECONDS = 1.0

_listeners: set[threading.Event] = set()
_publisher: redis.Redis | None = None


def channel() -> str:
    """How other processes are told: "postgresql", "redis" or "" (they poll)."""
    if connections["default"].vendor == "postgresql":
        return "postgresql"
    return "redis" if settings.REDIS_URL else ""


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
    except (DatabaseError, redis.RedisError) as problem:
        # The workers' own look (fallback) finds the runs a moment later.
        logger.warning("could not wake the workers: %s", problem)


def publisher() -> redis.Redis:
    global _publisher
    if _publisher is None:
        _publisher = redis.Redis.from_url(settings.REDIS_URL)
    return _publisher


class Listener:
    """What a worker waits on between its looks for claimed runs."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.closed = threading.Event()
        self.kind = channel()
        _listeners.add(self.event)
        if self.kind:
            target = self._listen_postgresql if self.kind == "postgresql" else self._listen_redis
            threading.Thread(target=self._keep(target), name="run-wakeups", daemon=True).start()

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

    def _keep(self, listen):
        def keep() -> None:
            while not self.closed.is_set():
                try:
                    listen()
                except (psycopg.Error, redis.RedisError, OSError) as problem:
                    logger.warning("run wake-ups interrupted (%s); listening again", problem)
                    self.closed.wait(RECONNECT_SECONDS)

        return keep

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
            while not self.closed.is_set():
                for _ in listening.notifies(timeout=1.0, stop_after=1):
                    self.event.set()

    def _listen_redis(self) -> None:
        subscriber = redis.Redis.from_url(settings.REDIS_URL).pubsub(
            ignore_subscribe_messages=True
        )
        with contextlib.closing(subscriber):
            subscriber.subscribe(CHANNEL)
            while not self.closed.is_set():
                if subscriber.get_message(timeout=1.0):
                    self.event.set()
