"""django-q2's tasks done by threads of the worker process: a task queued through the
broker is run, its result stored and acknowledged; a failing one is stored as a failure;
stopping ends every thread."""

from __future__ import annotations

import pytest
from django_q.conf import Conf
from django_q.models import Failure, OrmQ, Success
from django_q.tasks import async_task

from runs_app.follow import wait_for
from runs_app.worker.task_threads import TaskThreads

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def task_threads():
    threads = TaskThreads(workers=2)
    threads.start()
    yield threads
    threads.stop()


def test_a_queued_task_is_done_stored_and_acknowledged(task_threads):
    async_task("math.floor", 2.5, task_name="floor")
    assert wait_for(lambda: Success.objects.filter(name="floor").exists(), timeout=20)
    assert Success.objects.get(name="floor").result == 2
    assert wait_for(lambda: not OrmQ.objects.exists(), timeout=10)  # acknowledged


def test_a_failing_task_is_stored_as_a_failure(task_threads):
    async_task("math.sqrt", -1, task_name="impossible")
    assert wait_for(lambda: Failure.objects.filter(name="impossible").exists(), timeout=20)
    assert "math domain error" in Failure.objects.get(name="impossible").result


def test_stopping_ends_every_thread():
    threads = TaskThreads(workers=3)
    threads.start()
    assert len(threads.threads) == 5  # pusher, three workers, monitor
    threads.stop()
    assert not any(thread.is_alive() for thread in threads.threads)


def test_tasks_go_on_after_redis_restarts(private_redis, monkeypatch):
    """With the Redis broker: Redis restarted (its queue and every connection gone), the
    pusher's turn fails, and the next one pulls again — no thread ends, no restart needed."""
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", private_redis.url)
    threads = TaskThreads(workers=1)
    threads.start()
    try:
        async_task("math.floor", 1.5, task_name="before the restart")
        assert wait_for(lambda: Success.objects.filter(name="before the restart").exists(), 20)
        private_redis.restart()
        async_task("math.floor", 2.5, task_name="after the restart")
        assert wait_for(lambda: Success.objects.filter(name="after the restart").exists(), 20)
        assert all(thread.is_alive() for thread in threads.threads)
        assert threads.pulling.state()["state"] == "ok"
    finally:
        threads.stop()
