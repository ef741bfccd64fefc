"""The runs a worker follows, each in a thread of `manage.py worker`.

A run's follower mostly waits — on the engine's log stream, on its lease — so a thread is
enough, and one process can follow many runs for a few MB each (a process per run cost
~60 MB). The supervisor takes claimed runs oldest first (`PipelineRun.take`: exactly one
worker wins each, across processes and machines) as soon as it is woken (runs_app.wakeup),
up to what this worker may follow at once (WORKER_CAPACITY) — only runs whose pipeline's
`placement` its node's labels fit and whose chosen `executor` its machine can start, and
none while its node is drained; the instance's limits were applied when the runs were
claimed.

Stopping the worker does not wait for runs: `stop()` makes every follower let go of its run
at once (LeaseLost: nothing more is written), and the runs wait for the next follower —
their containers go on, and it re-attaches.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connection

from runs_app.executors import startable_executors
from runs_app.models import PipelineRun, WorkerNode
from runs_app.placement import fits
from runs_app.worker.execution import follow_run, worker_id
from runs_app.worker.listener import Listener
from runs_app.worker.loops import RECENT_RESTART_SECONDS, KeptThread, Loop, Threads

logger = logging.getLogger(__name__)

# How long stop() waits for followers to let go (each needs well under a second).
STOP_WAIT_SECONDS = 10.0
# Claimed runs looked at per look (those of other nodes are passed over).
LOOK_AT_MOST = 200


class RunSupervisor:
    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity or settings.WORKER_CAPACITY
        self.followers: dict[int, threading.Thread] = {}
        self.stopping = threading.Event()
        self.listener: Listener | None = None
        self.kept: KeptThread | None = None
        self.looking = Loop("run supervisor")
        # A follower that ended with an exception (a fault of Fast-Flow's: its run is handed
        # out again when its lease lapses) shows for a minute, or until one ends well.
        self.following = Loop("run followers")

    def start(self, threads: Threads | None = None) -> None:
        threads = threads or Threads(self.stopping)
        self.listener = Listener(threads)
        self.kept = threads.add("run-supervisor", self.run, [self.looking, self.following])

    def run(self) -> None:
        while not self.stopping.is_set():
            with self.looking.turn():
                self.take_claimed()
            self.listener.wait()

    def take_claimed(self) -> None:
        """Follow as many waiting runs as this worker has room for, oldest claim first."""
        crashed_at = self.following.failing_since
        if crashed_at is not None and time.time() - crashed_at >= RECENT_RESTART_SECONDS:
            self.following.succeeded()
        self.followers = {pk: t for pk, t in self.followers.items() if t.is_alive()}
        room = self.capacity - len(self.followers)
        if (
            room <= 0
            or WorkerNode.objects.filter(name=settings.WORKER_NAME, draining=True).exists()
        ):
            return
        waiting = (
            PipelineRun.objects.filter(status=PipelineRun.Status.CLAIMED)
            .select_related("pipeline")
            .order_by("claimed_at", "pk")
        )
        executors = startable_executors()
        for claimed in waiting[:LOOK_AT_MOST]:
            if self.stopping.is_set() or room <= 0:
                return
            pipeline = claimed.pipeline
            if settings.FASTFLOW_EXECUTOR != "swarm" and not fits(
                settings.WORKER_LABELS,
                pipeline.spec.placement,
                pipeline.executor_wanted,
                executors,
            ):
                continue  # another node's (a Swarm places every run by its constraints)
            run = PipelineRun.take(claimed.pk, worker_id())
            if run is None:
                continue  # another worker took it first
            follower = threading.Thread(
                target=self.follow, args=(run,), name=f"run-{run.public_id}", daemon=True
            )
            self.followers[run.pk] = follower
            follower.start()
            room -= 1

    def follow(self, run: PipelineRun) -> None:
        try:
            follow_run(run, lets_go=self.stopping.is_set)
        except Exception as problem:
            logger.exception("following run %s failed", run.public_id)
            self.following.failed(problem)
        else:
            self.following.succeeded()
        finally:
            connection.close()  # this thread's own connection
            self.listener.wake()  # a follower is free: look again at once

    def stop(self) -> None:
        """Followers let go of their runs, which then wait for the next worker at once."""
        self.stopping.set()
        if self.listener is not None:
            self.listener.close()
        if self.kept is not None:
            self.kept.join(timeout=STOP_WAIT_SECONDS)
        for follower in list(self.followers.values()):
            follower.join(timeout=STOP_WAIT_SECONDS)
        try:
            PipelineRun.release_stale([worker_id()])
        except DatabaseError:
            logger.warning("could not hand this worker's runs over: their leases will lapse")
        finally:
            connection.close()
