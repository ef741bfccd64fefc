"""Live events of runs over the channel layer, when one is configured (REDIS_URL).

The log file stays the truth. When web and worker talk through Redis, the worker also
pushes each written line (with its sequence number), each CPU/memory sample and each status
change to the run's group, so viewers on any web process get them at once instead of
polling. A viewer that sees a gap in the sequence (a message dropped by a full channel, a
Redis blip) reads the missing lines from the file, so nothing is lost or doubled either way.

Without a channel layer every function here does nothing.

Events (channel-layer messages, handled by runs_app.consumers.RunLogConsumer):
    {"type": "run.lines", "lines": [[seq, timestamp, stream, text], ...]}
    {"type": "run.metrics", "samples": [{"t": timestamp, "cpu": percent, "mem": bytes}, ...]}
    {"type": "run.status"}      the row changed: read it again
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque

from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)

# Lines written within this window travel in one message: a chatty run costs Redis a
# few dozen messages per second, not one per line, for a delay the eye cannot see.
BATCH_SECONDS = 0.02
MAX_LINES_PER_MESSAGE = 500
# While Redis is unreachable, the oldest events go first: viewers read them from the file.
MAX_PENDING = 20_000


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
    """One thread per process with its own event loop: writers never wait for Redis."""

    def __init__(self, layer) -> None:
        self.layer = layer
        self.pid = os.getpid()
        self.pending: deque[tuple[str, str, object]] = deque()
        self.condition = threading.Condition()
        self.put_count = self.sent_count = 0
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

    def _run(self) -> None:
        asyncio.run(self._send_forever())

    async def _send_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await loop.run_in_executor(None, self._next_batch)
            for group, message in coalesce(batch):
                try:
                    await self.layer.group_send(group, message)
                except Exception:
                    # Viewers fall back to the file (and their own status checks); the run
                    # itself must never suffer for a live view.
                    logger.warning("live event for %s not sent", group, exc_info=True)
            with self.condition:
                self.sent_count += len(batch)
                self.condition.notify_all()

    def _next_batch(self) -> list[tuple[str, str, object]]:
        with self.condition:
            self.condition.wait_for(lambda: bool(self.pending))
        threading.Event().wait(BATCH_SECONDS)  # let a burst of lines gather
        with self.condition:
            batch = list(self.pending)
            self.pending.clear()
        return batch


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
    """The process's publisher; a new one after a fork (q2 forks its workers) or a new layer."""
    global _current
    layer = get_channel_layer()
    with _lock:
        if _current is None or _current.pid != os.getpid() or _current.layer is not layer:
            _current = Publisher(layer)
        return _current
