"""Live events of runs over the channel layer, when one is configured (REDIS_URL).

The stored log stays the truth. When web and worker talk through Redis, the worker also
pushes each written line (with its sequence number), each CPU/memory sample and each status
change to the run's group, so viewers on any web process get them at once instead of
polling. A viewer that sees a gap in the sequence (a message dropped by a full channel, a
Redis blip) reads the missing lines from the database, so nothing is lost or doubled.

Without a channel layer every function here does nothing.

Events (channel-layer messages, handled by runs_app.consumers.RunLogConsumer):
    {"type": "run.lines", "lines": [[seq, timestamp, stream, text], ...]}
    {"type": "run.metrics", "samples": [{"t": timestamp, "cpu": percent, "mem": bytes}, ...]}
    {"type": "run.status"}      the row changed: read it again
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from collections import deque

import channels_redis.core
import redis
from channels import DEFAULT_CHANNEL_LAYER
from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

# Lines written within this window travel in one message: a chatty run costs Redis a
# few dozen messages per second, not one per line, for a delay the eye cannot see.
BATCH_SECONDS = 0.02
MAX_LINES_PER_MESSAGE = 500
# While Redis is unreachable, the oldest events go first: viewers read them from the database.
MAX_PENDING = 20_000
# At a process's exit, events already put get this long to be sent.
EXIT_FLUSH_SECONDS = 2.0
WARN_EVERY_SECONDS = 60.0
RECONNECT_MAX_SECONDS = 2.0


def enabled() -> bool:
    return bool(getattr(settings, "CHANNEL_LAYERS", None))


def group_name(public_id) -> str:
    return f"run-{public_id}"


def line(public_id, seq: int, timestamp: str, stream: str, text: str) -> None:
    if enabled():
        _publisher().put(group_name(public_id), "run.lines", [seq, timestamp, stream, text])


def sample(public_id, record: dict) -> None:
    if enabled():
        _publisher().put(group_name(public_id), "run.metrics", record)


def status_changed(public_id) -> None:
    if enabled():
        _publisher().put(group_name(public_id), "run.status", None)


def flush(timeout: float = 5.0) -> bool:
    """Wait until everything put so far has been sent (a run's end, a process's exit)."""
    publisher = _current
    if publisher is None or publisher.pid != os.getpid():
        return True
    return publisher.flush(timeout)


class Publisher:
    """One thread per process, with its own event loop and its own channel layer: writers
    never wait for Redis, and nothing here keeps the process from exiting.

    The thread is a daemon and waits on a condition, not in an executor (an executor's
    threads are joined at interpreter exit, and a waiting one would hold the process on
    SIGTERM forever). At exit, events already put get a moment (EXIT_FLUSH_SECONDS) to go.
    """

    def __init__(self, config: dict, pending: deque | None = None) -> None:
        self.config = config
        self.pid = os.getpid()
        self.pending: deque[tuple[str, str, object]] = pending or deque()
        self.last_warned = 0.0
        self.condition = threading.Condition()
        self.put_count = self.sent_count = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="fastflow-live", daemon=True)
        self.thread.start()

    def put(self, group: str, kind: str, payload: object) -> None:
        with self.condition:
            self.pending.append((group, kind, payload))
            self.put_count += 1
            if len(self.pending) > MAX_PENDING:
                self.pending.popleft()
                self.sent_count += 1
            self.condition.notify_all()

    def flush(self, timeout: float) -> bool:
        with self.condition:
            target = self.put_count
            return self.condition.wait_for(lambda: self.sent_count >= target, timeout)

    def stop(self, timeout: float = EXIT_FLUSH_SECONDS) -> None:
        """Send what is pending (for at most `timeout`), then end the thread."""
        self.flush(timeout)
        with self.condition:
            self.stopping = True
            self.condition.notify_all()
        self.thread.join(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        layer = import_string(self.config["BACKEND"])(**self.config.get("CONFIG", {}))
        try:
            while (batch := self._next_batch()) is not None:
                loop.run_until_complete(self._send(layer, batch))
                with self.condition:
                    self.sent_count += len(batch)
                    self.condition.notify_all()
        finally:
            loop.close()

    async def _send(self, layer, batch: list[tuple[str, str, object]]) -> None:
        for group, message in coalesce(batch):
            try:
                await layer.group_send(group, message)
            except Exception as problem:
                # Viewers fall back to the database (and their own status checks); the run
                # itself must never suffer for a live view. Redis away: said once a minute,
                # and the next send connects again.
                if time.monotonic() - self.last_warned >= WARN_EVERY_SECONDS:
                    self.last_warned = time.monotonic()
                    logger.warning("live events not sent (%s: %s)", type(problem).__name__, problem)

    def _next_batch(self) -> list[tuple[str, str, object]] | None:
        with self.condition:
            self.condition.wait_for(lambda: self.pending or self.stopping)
            if self.stopping and not self.pending:
                return None
        time.sleep(BATCH_SECONDS)  # let a burst of lines gather
        with self.condition:
            batch = list(self.pending)
            self.pending.clear()
        return batch


class RedisChannelLayer(channels_redis.core.RedisChannelLayer):
    """channels_redis's layer, whose `receive` waits while Redis restarts instead of
    raising: a consumer's receive loop (channels' dispatch) would end with the error and
    close every live view. Its viewers read the database meanwhile, and join their group again
    once Redis is back (runs_app.consumers)."""

    async def receive(self, channel: str) -> dict:
        delay = 0.1
        while True:
            try:
                return await super().receive(channel)
            except (redis.ConnectionError, redis.TimeoutError, ConnectionError) as problem:
                logger.warning("live events: Redis unreachable (%s); waiting", problem)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)


def coalesce(batch: list[tuple[str, str, object]]) -> list[tuple[str, dict]]:
    """Adjacent lines (or samples) of one run become one message; order is kept."""
    messages: list[tuple[str, dict]] = []
    for group, kind, payload in batch:
        key = {"run.lines": "lines", "run.metrics": "samples"}.get(kind)
        last = messages[-1] if messages else None
        if (
            key
            and last
            and last[0] == group
            and last[1]["type"] == kind
            and len(last[1][key]) < MAX_LINES_PER_MESSAGE
        ):
            last[1][key].append(payload)
        elif key:
            messages.append((group, {"type": kind, key: [payload]}))
        else:
            messages.append((group, {"type": kind}))
    return messages


_current: Publisher | None = None
_lock = threading.Lock()


def _publisher() -> Publisher:
    """The process's one publisher: made under a lock (requests arrive on many threads);
    a new one after a fork (q2 forks its workers) or when the channel layer settings
    changed (tests)."""
    global _current
    config = settings.CHANNEL_LAYERS[DEFAULT_CHANNEL_LAYER]
    with _lock:
        current = _current
        mine = current is not None and current.pid == os.getpid()
        if mine and current.config == config and current.thread.is_alive():
            return current
        if mine and not current.thread.is_alive():
            # Never a silent end: said, and a new thread takes over what was waiting.
            logger.error("the live publisher's thread had ended; started again")
            _current = Publisher(config, pending=current.pending)
            return _current
        if mine:
            current.stop(timeout=1.0)
        _current = Publisher(config)
        return _current


def _stop_at_exit() -> None:
    publisher = _current
    if publisher is not None and publisher.pid == os.getpid():
        publisher.stop()


def _forget_after_fork() -> None:
    """A forked child gets the parent's lock state and a publisher whose thread it lacks."""
    global _current, _lock
    _current = None
    _lock = threading.Lock()


atexit.register(_stop_at_exit)
os.register_at_fork(after_in_child=_forget_after_fork)
