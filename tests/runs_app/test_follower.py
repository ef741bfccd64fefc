"""Following a run through what goes wrong around it: a run silent for longer than any
stream timeout, an engine that goes away and comes back, a follower that lost its lease,
a disk that fills up. The engine is real; the outage is a cut line to it (EngineProxy)."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

from runs_app.executors import follower as container_follower
from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from runs_app.worker import execution
from tests.runs_app.conftest import (
    execute,
    in_thread,
    log_text,
    output_lines,
    queued,
    read_log,
    require,
)
from tests.runs_app.engine_proxy import EngineProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]

Status, Reason = PipelineRun.Status, PipelineRun.FailureReason

QUIET = "import time\nprint('start', flush=True)\ntime.sleep(4)\nprint('end', flush=True)\n"
TICKS = "import time\nfor i in range(30):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"


def test_a_run_quieter_than_the_stream_timeout_is_followed_to_its_end_once(
    make_pipeline, settings, docker_engine, caplog
):
    settings.DOCKER_STREAM_TIMEOUT = 1  # the streams time out four times during the silence
    run = execute(queued(make_pipeline, "quiet", QUIET))
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run) == ["start", "end"]
    assert log_text(run).count(" S finished: ") == 1
    assert "re-attached" not in log_text(run)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_quiet_run_keeps_its_one_worker_process(make_pipeline, settings, tmp_path):
    """In the real worker: the lease is renewed through the silence, no second follower."""
    from tests.runs_app.test_worker import Worker

    settings.RUN_HEARTBEAT_TIMEOUT = 5
    run = queued(make_pipeline, "silent", "import time\ntime.sleep(12)\nprint('done')\n")
    worker = Worker(settings, tmp_path)
    environment = {
        **worker.environment(),
        "DOCKER_STREAM_TIMEOUT": "1",
        "RUN_HEARTBEAT_TIMEOUT": "5",
    }
    worker.environment = lambda: environment
    worker.start()
    followers = set()
    try:

        def final() -> bool:
            current = PipelineRun.objects.get(pk=run.pk)
            if current.worker_id:
                followers.add(current.worker_id)
            return current.is_finished

        assert wait_for(final, timeout=90), worker.log.read_text()[-3000:]
    finally:
        worker.kill()
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert len(followers) == 1, followers
    assert log_text(run).count(" S finished: ") == 1
    assert "Traceback" not in worker.log.read_text(), worker.log.read_text()[-4000:]


def test_an_engine_that_goes_away_releases_the_run_and_it_is_followed_again(
    make_pipeline, settings, docker_engine, monkeypatch, tmp_path
):
    monkeypatch.setattr(container_follower, "ENGINE_RETRY_SECONDS", 2.0)
    with EngineProxy(tmp_path / "engine.sock") as proxy, monkeypatch.context() as patch:
        patch.setenv("DOCKER_HOST", proxy.url)
        run = queued(make_pipeline, "ticking", TICKS)
        follower = in_thread(run)
        assert wait_for(lambda: "O tick 2\n" in read_log(run), timeout=60)
        proxy.cut()
        follower.join(timeout=60)
        run.refresh_from_db()
        # Released, not failed: the container goes on without a follower.
        assert run.status == Status.CLAIMED, log_text(run)
        assert docker_engine.api.inspect_container(run.container_id)["State"]["Running"]
        assert "the run waits for it" in log_text(run)
        # A follower that takes it while the engine is still away gives it back again.
        execution.execute_run(run.pk)
        run.refresh_from_db()
        assert run.status == Status.CLAIMED
        proxy.restore()
        execution.execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run) == [f"tick {i}" for i in range(30)]  # no gap, no duplicate
    assert log_text(run).count(" S finished: ") == 1


def test_a_follower_that_lost_its_lease_stops_following(make_pipeline, settings, docker_engine):
    run = queued(make_pipeline, "handover", TICKS)
    first = in_thread(run)
    assert wait_for(lambda: "O tick 2\n" in read_log(run), timeout=60)
    # Reconcile decided the follower was gone (its lease lapsed) and another one took over.
    PipelineRun.objects.filter(pk=run.pk).update(status=Status.CLAIMED, worker_id="")
    assert PipelineRun.take(run.pk, "other-host:1:t") is not None
    first.join(timeout=30)
    assert not first.is_alive()  # it noticed at its next heartbeat and stopped
    run.refresh_from_db()
    # The container prints on, and the old follower writes none of it any more.
    assert wait_for(lambda: b"tick 29" in docker_engine.api.logs(run.container_id), timeout=60)
    assert "tick 29" not in read_log(run)
    assert " S finished: " not in read_log(run)
    assert PipelineRun.objects.get(pk=run.pk).worker_id == "other-host:1:t"


def test_a_full_disk_fails_the_run_and_the_worker_goes_on(make_pipeline, settings, tmp_path):
    require(os.geteuid() == 0, "root, to mount a small tmpfs as a full disk")
    logs = tmp_path / "small-logs"
    logs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(logs)], check=True)
    try:
        settings.LOGS_DIR = logs
        run = execute(
            queued(
                make_pipeline,
                "filler",
                "for i in range(20000):\n    print(f'{i:06} ' + 'z' * 50)\nprint('the end')\n",
            )
        )
        assert run.status == Status.FAILED
        assert run.failure_reason == Reason.LOG_UNWRITABLE
        assert "No space left on device" in run.error_message
        # The same process runs the next run as ever (its log elsewhere).
        settings.LOGS_DIR = tmp_path / "logs"
        after = execute(queued(make_pipeline, "after", "print('fine')\n"))
        assert after.status == Status.SUCCEEDED and output_lines(after) == ["fine"]
    finally:
        subprocess.run(["umount", "-l", str(logs)], check=False)
