"""django-q2's cluster as threads of the worker process.

The worker's tasks — syncs, warm-ups, retention, the dependency audit — spend their time
waiting on git, on uv in a container, on the database. django-q2 runs them in a cluster of
processes (a sentinel, a pusher, a monitor and the workers), each a copy of Django at
~100 MB; here they run as threads of `manage.py worker`, joined by in-memory queues:
django-q2's own `worker` function runs the tasks; the pusher (pull tasks from the broker,
ORM or Redis) and the monitor (store each result, then acknowledge it) are loops of ours
around django-q2's broker and result functions, because django-q2's own end at the first
broker error and leave it to its sentinel process to start them again. Ours treat a broker
error as a failed turn (runs_app.worker.loops): the database or Redis back, they go on within a
second. A result that cannot be stored or acknowledged is tried again until it is; a task
pulled but never acknowledged (the worker stopped) is delivered again by the broker after
Q_CLUSTER["retry"].

What the process cluster adds and this does not: django-q2's own schedules (Fast-Flow
schedules runs itself: runs_app.worker.scheduler), and killing a task after Q_CLUSTER["timeout"]
(None here: the tasks keep their own limits). A task's exception is caught and stored by
django-q2's `worker` as in a process.
"""

from __future__ import annotations

import logging
import queue
import threading
from functools import partial
from multiprocessing import Value

from django_q.brokers import Broker, get_broker
from django_q.conf import Conf
from django_q.monitor import save_cached, save_task
from django_q.signals import post_execute
from django_q.signing import BadSignature, SignedPackage
from django_q.worker import worker

from runs_app.worker.loops import KeptThread, Loop, Threads

logger = logging.getLogger(__name__)

STOP = "STOP"  # what django-q2's worker loop ends on
JOIN_SECONDS = 10.0
RETRY_SECONDS = 1.0


class TaskThreads:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or Conf.WORKERS
        # As django-q2 bounds its own: the pusher does not pull more than the workers can take.
        self.tasks: queue.Queue = queue.Queue(maxsize=max(self.workers**2, 4))
        self.results: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.pulling = Loop("task pusher")
        self.recording = Loop("task results")
        self.kept: list[KeptThread] = []

    @property
    def threads(self) -> list[threading.Thread]:
        return [kept.thread for kept in self.kept if kept.thread is not None]

    def start(self, threads: Threads | None = None) -> None:
        """Start the pusher, the workers and the monitor, as threads kept by `threads`
        (the worker's, which starts a dead one again)."""
        if threads is None:
            threads = Threads(self.stopping)
        else:
            self.stopping = threads.stopping  # the worker's: stopping it stops these
        self.kept.append(threads.add("task-pusher", self.push, [self.pulling]))
        self.kept += [
            threads.add(
                f"task-worker-{n}", partial(worker, self.tasks, self.results, Value("f", -1))
            )
            for n in range(1, self.workers + 1)
        ]
        self.kept.append(threads.add("task-monitor", self.monitor, [self.recording]))

    def push(self) -> None:
        """Pull tasks from the broker into the workers' queue until stopped."""
        broker = get_broker()
        while not self.stopping.is_set():
            pulled = None
            with self.pulling.turn() as turn:
                pulled = broker.dequeue()  # waits a moment itself when there is nothing
            if turn.failed:
                self.stopping.wait(RETRY_SECONDS)
            for ack_id, package in pulled or ():
                try:
                    task = SignedPackage.loads(package)
                except (TypeError, BadSignature):
                    logger.exception("a task in the broker could not be read; dropped")
                    broker.fail(ack_id)
                    continue
                task["cluster"] = Conf.CLUSTER_NAME  # as django-q2 stores it
                task["ack_id"] = ack_id
                if not self._put(task):
                    return  # stopping: the rest is delivered again later

    def _put(self, task: dict) -> bool:
        while not self.stopping.is_set():
            try:
                self.tasks.put(task, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def monitor(self) -> None:
        """Store each result and acknowledge its task, until told to stop."""
        broker = get_broker()
        while (result := self.results.get()) != STOP:
            while True:
                with self.recording.turn() as turn:
                    record_result(result, broker)
                if not turn.failed or self.stopping.is_set():
                    break  # (not acknowledged when stopping: the broker delivers it again)
                self.stopping.wait(RETRY_SECONDS)

    def stop(self) -> None:
        """The pusher stops pulling; workers finish the task in hand (a task still queued
        here is delivered again by the broker later: it was never acknowledged)."""
        self.stopping.set()
        drain(self.tasks)
        for _ in range(self.workers):
            self._stop_one(self.tasks)
        for kept in self.kept[1:-1]:
            kept.join(timeout=JOIN_SECONDS)
        self.results.put(STOP)
        for kept in (self.kept[0], self.kept[-1]):
            kept.join(timeout=JOIN_SECONDS)

    def _stop_one(self, into: queue.Queue) -> None:
        while True:
            try:
                into.put(STOP, timeout=0.1)
                return
            except queue.Full:
                drain(into)  # the pusher's last pull: delivered again by the broker later


def record_result(task: dict, broker: Broker) -> None:
    """What django-q2's monitor does with a result: store it, acknowledge the task (once
    stored: raises when the broker cannot be reached, to be tried again), tell
    post_execute's receivers."""
    if task.get("cached", False):
        save_cached(task, broker)
    else:
        save_task(task, broker)
    ack_id = task.get("ack_id")
    if ack_id and (task["success"] or task.get("ack_failure", False)):
        broker.acknowledge(ack_id)
    task.pop("ack_id", None)
    post_execute.send(sender="django_q", task=task)
    if task["success"]:
        logger.info("task %s done", task["name"])
    else:
        logger.error("task %s failed: %s", task["name"], task["result"])


def drain(tasks: queue.Queue) -> None:
    """Drop tasks pulled but not started: never acknowledged, the broker delivers them
    again (after Q_CLUSTER["retry"])."""
    while True:
        try:
            tasks.get_nowait()
        except queue.Empty:
            return
