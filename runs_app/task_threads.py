"""django-q2's cluster as threads of the worker process.

The worker's tasks — syncs, warm-ups, retention, the dependency audit — spend their time
waiting on git, on uv in a container, on the database. django-q2 runs them in a cluster of
processes (a sentinel, a pusher, a monitor and the workers), each a copy of Django at
~100 MB; here the same functions of django-q2 — `pusher` pulls tasks from the broker (ORM
or Redis), `worker` runs them, `monitor` stores their results and acknowledges them — run
as threads of `manage.py worker`, joined by in-memory queues.

What the process cluster adds and this does not: django-q2's own schedules (Fast-Flow
schedules runs itself: runs_app.scheduler), and killing a task after Q_CLUSTER["timeout"]
(None here: the tasks keep their own limits). A task's exception is caught and stored by
django-q2's `worker` as in a process.
"""

from __future__ import annotations

import logging
import queue
import threading
from multiprocessing import Value

from django.db import connection
from django_q.conf import Conf
from django_q.monitor import monitor
from django_q.pusher import pusher
from django_q.worker import worker

logger = logging.getLogger(__name__)

STOP = "STOP"  # what django-q2's worker and monitor loops end on
JOIN_SECONDS = 10.0


class TaskThreads:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or Conf.WORKERS
        # As django-q2 bounds its own: the pusher does not pull more than the workers can take.
        self.tasks: queue.Queue = queue.Queue(maxsize=max(self.workers**2, 4))
        self.results: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        parts = [("task-pusher", pusher, (self.tasks, self.stopping))]
        parts += [
            (f"task-worker-{n}", worker, (self.tasks, self.results, Value("f", -1)))
            for n in range(1, self.workers + 1)
        ]
        parts.append(("task-monitor", monitor, (self.results,)))
        for name, function, arguments in parts:
            thread = threading.Thread(
                target=self._run, args=(function, arguments), name=name, daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def _run(self, function, arguments) -> None:
        try:
            function(*arguments)
        except Exception:
            logger.exception("%s stopped", threading.current_thread().name)
        finally:
            connection.close()  # this thread's own

    def stop(self) -> None:
        """The pusher stops pulling; workers finish the task in hand (a task still queued
        here is delivered again by the broker later: it was never acknowledged)."""
        self.stopping.set()
        drain(self.tasks)
        for _ in range(self.workers):
            self._put(self.tasks, STOP)
        for thread in self.threads[1:-1]:
            thread.join(timeout=JOIN_SECONDS)
        self._put(self.results, STOP)
        for thread in (self.threads[0], self.threads[-1]):
            thread.join(timeout=JOIN_SECONDS)

    def _put(self, into: queue.Queue, item: str) -> None:
        while True:
            try:
                into.put(item, timeout=0.1)
                return
            except queue.Full:
                drain(into)  # the pusher's last pull: delivered again by the broker later


def drain(tasks: queue.Queue) -> None:
    """Drop tasks pulled but not started: never acknowledged, the broker delivers them
    again (after Q_CLUSTER["retry"])."""
    while True:
        try:
            tasks.get_nowait()
        except queue.Empty:
            return
