"""A real worker process heals itself: PostgreSQL ending every connection again and again,
SQLite locked past its busy timeout, a fault injected into one of its loops or threads.
Afterwards the schedule fires, the queued sync and the pending notification are done (once),
the running run ends once with its whole log, the heartbeat is fresh and every thread runs."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import timedelta

import pytest
from django.db import close_old_connections, connection
from django.utils import timezone
from django_q.models import OrmQ

from pipelines_app import gitsync
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline, Sync
from runs_app.follow import wait_for
from runs_app.models import Channel, Delivery, Notification, PipelineRun, WorkerProcess
from tests.pipelines_app.test_gitsync import Remote
from tests.runs_app.conftest import Hooks, log_text, output_lines, read_log
from tests.runs_app.test_worker import Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]

Status = PipelineRun.Status
STEADY = "import time\nfor i in range(30):\n    print('tick', i, flush=True)\n    time.sleep(0.3)\n"
OUTAGES = 3
OUTAGE_SECONDS = 2.0


@pytest.fixture
def worker(settings, tmp_path):
    running = Worker(settings, tmp_path)
    yield running
    running.kill()


@pytest.fixture
def remote(tmp_path, settings) -> Remote:
    """The pipelines come from a repository, so that a sync has something to do."""
    settings.GIT_REPO_URL = str(tmp_path / "remote.git")
    settings.GIT_BRANCH = "main"
    made = Remote(tmp_path)
    made.commit(
        {
            "tick/main.py": "print('on time')\n",
            "tick/pipeline.json": json.dumps({"schedule_interval_seconds": 2}),
            "steady/main.py": STEADY,
        },
        "Two pipelines",
    )
    assert gitsync.sync(Sync.Trigger.CLI).status == Sync.Status.SUCCEEDED
    return made


def worker_is_well(worker: Worker) -> bool:
    """Reported within the last few seconds, every thread alive, nothing degraded."""
    close_old_connections()
    row = WorkerProcess.objects.filter(pid=worker.process.pid).first()
    return (
        row is not None
        and row.seen_at >= timezone.now() - timedelta(seconds=8)
        and not row.degraded
        and bool(row.threads)
        and all(thread["alive"] for thread in row.threads)
    )


def pending_notification(port: int, due_in: float) -> Delivery:
    channel = Channel(name="ops")
    channel.set_url(f"json://127.0.0.1:{port}/")
    channel.save()
    notification = Notification.objects.create(event="failed", title="t", body="told once")
    return Delivery.objects.create(
        notification=notification,
        channel=channel,
        channel_name="ops",
        next_attempt_at=timezone.now() + timedelta(seconds=due_in),
    )


def queued_sync(remote: Remote, due_in: float) -> None:
    """A sync of a new commit, waiting in the task queue until the outages have begun."""
    remote.commit({"added/main.py": "print('new')\n"}, "A third pipeline")
    gitsync.request_sync(Sync.Trigger.MANUAL)
    OrmQ.objects.update(lock=timezone.now() + timedelta(seconds=due_in))


def test_postgresql_ending_every_connection_again_and_again(
    postgresql_outage, worker, remote, hooks, settings
):
    worker.env = {"GIT_REPO_URL": settings.GIT_REPO_URL, "GIT_BRANCH": "main"}
    worker.start()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="steady"), trigger="manual")
    assert wait_for(lambda: "O tick 2\n" in log_of(run), timeout=60), worker.log.read_text()
    assert wait_for(lambda: worker_is_well(worker), timeout=30), worker.log.read_text()[-3000:]
    delivery = pending_notification(hooks, due_in=1.0)
    queued_sync(remote, due_in=1.0)

    for _ in range(OUTAGES):
        with postgresql_outage:
            time.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for an event
        time.sleep(1.0)  # back for a moment, then away again
    back_at = timezone.now()
    assert "works again after" in worker.log.read_text()  # the outages were felt

    # The schedule fires again within seconds.
    fired = PipelineRun.objects.filter(pipeline__name="tick", queued_at__gt=back_at)
    assert wait_for(fired.exists, timeout=15), worker.log.read_text()[-3000:]
    # The queued sync ran, the notification went out exactly once.
    assert wait_for(lambda: Pipeline.objects.filter(name="added").exists(), timeout=30)
    assert wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status == "sent", timeout=30)
    # The run ends once, with its whole log.
    assert wait_for(lambda: refreshed(run).is_finished, timeout=60), worker.log.read_text()
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run) == [f"tick {i}" for i in range(30)]
    assert log_text(run).count(" S finished: ") == 1
    # Heartbeat fresh, every thread alive, nothing degraded any more.
    assert wait_for(lambda: worker_is_well(worker), timeout=30), worker.log.read_text()[-3000:]
    assert len(Hooks.received) == 1
    assert worker.process.poll() is None
    # Each due time fired at most once.
    due_times = list(
        PipelineRun.objects.filter(pipeline__name="tick").values_list("scheduled_for", flat=True)
    )
    assert len(due_times) == len(set(due_times))


def test_sqlite_locked_past_the_busy_timeout_while_the_worker_runs(worker, hooks, make_pipeline):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite pass runs this")
    make_pipeline("tick", main="print('on time')\n", config={"schedule_interval_seconds": 2})
    discover()
    # Writers give up after one second (20 s in production): the lock is felt as errors.
    worker.prelude = (
        "from django.conf import settings\n"
        "settings.DATABASES['default']['OPTIONS']['timeout'] = 1\n"
    )
    worker.start()
    assert wait_for(lambda: worker_is_well(worker), timeout=30), worker.log.read_text()[-3000:]
    delivery = pending_notification(hooks, due_in=0.5)
    connection.close()
    blocker = sqlite3.connect(connection.settings_dict["NAME"], timeout=30)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        # Every writer and reader of the worker waits, then fails with "database is locked".
        assert wait_for(lambda: "database is locked" in worker.log.read_text(), timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    back_at = timezone.now()
    fired = PipelineRun.objects.filter(pipeline__name="tick", queued_at__gt=back_at)
    assert wait_for(fired.exists, timeout=15), worker.log.read_text()[-3000:]
    assert wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status == "sent", timeout=30)
    assert wait_for(lambda: worker_is_well(worker), timeout=30), worker.log.read_text()[-3000:]
    assert len(Hooks.received) == 1


INJECTED = """
from runs_app.worker import delivery, task_threads
calls = {"deliver": 0, "push": 0}
real_deliver, real_push = delivery.deliver_due, task_threads.TaskThreads.push

def failing_deliver(*args, **kwargs):
    calls["deliver"] += 1
    if calls["deliver"] <= 3:
        raise RuntimeError("injected into the notifications loop")
    return real_deliver(*args, **kwargs)

def dying_push(self):
    calls["push"] += 1
    if calls["push"] == 1:
        raise RuntimeError("injected: the pusher's thread dies")
    return real_push(self)

delivery.deliver_due = failing_deliver
task_threads.TaskThreads.push = dying_push
"""


def test_a_fault_injected_into_a_loop_and_a_thread_is_survived_and_reported(
    worker, hooks, make_pipeline
):
    worker.prelude = INJECTED
    worker.start()
    delivery = pending_notification(hooks, due_in=0)

    def reported_restart() -> bool:
        close_old_connections()
        row = WorkerProcess.objects.filter(pid=worker.process.pid).first()
        if row is None:
            return False
        pusher = next((t for t in row.threads if t["name"] == "task-pusher"), None)
        return bool(pusher and pusher["restarts"] == 1 and pusher["alive"])

    assert wait_for(reported_restart, timeout=30), worker.log.read_text()[-3000:]
    row = WorkerProcess.objects.get(pid=worker.process.pid)
    assert "task-pusher was started again after: RuntimeError: injected" in row.degraded
    log = worker.log.read_text()
    assert "thread task-pusher died; it is started again" in log
    assert "Traceback" in log and "injected: the pusher's thread dies" in log
    assert "notifications failed" in log
    # The tasks go through the restarted pusher; the notification through the healed loop.
    from django_q.tasks import async_task

    async_task("math.floor", 2.5, task_name="after the restart")
    from django_q.models import Success

    assert wait_for(lambda: Success.objects.filter(name="after the restart").exists(), 30)
    assert wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status == "sent", timeout=30)
    assert "notifications works again" in worker.log.read_text()
    assert len(Hooks.received) == 1


def test_a_loop_that_cannot_recover_makes_the_worker_exit_for_a_restart(worker):
    worker.prelude = (
        "from runs_app.worker import delivery\n"
        "def broken(*a, **k):\n    raise RuntimeError('this loop never recovers')\n"
        "delivery.deliver_due = broken\n"
    )
    worker.env = {"WORKER_UNHEALTHY_EXIT_SECONDS": "2"}
    worker.start()
    assert wait_for(lambda: worker.process.poll() is not None, timeout=60)
    assert worker.process.returncode == 3
    log = worker.log.read_text()
    assert "the worker gives up: notifications has not worked for" in log
    assert "this loop never recovers" in log


def log_of(run: PipelineRun) -> str:
    return read_log(run)


def refreshed(run: PipelineRun) -> PipelineRun:
    close_old_connections()
    run.refresh_from_db()
    return run
