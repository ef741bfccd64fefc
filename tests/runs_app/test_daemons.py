"""Daemons (restart_on_crash): started when wanted, restarted after a crash and its
cooldown, backing off in a crash loop, restarted on restart_interval, stopped when not
wanted, paused by a person's cancel — and never taking ordinary runs' slots. The decisions
are checked with a controllable clock; one daemon crashes and restarts on the engine."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.follow import wait_for
from runs_app.models import Daemon, PipelineRun
from runs_app.worker.daemons import CRASH_LOOP, supervise_daemons
from tests.runs_app.conftest import execute, log_text, output_lines, read_log
from tests.runs_app.test_worker import Worker

Status = PipelineRun.Status
T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def daemon_runs(name: str = "keeper"):
    return PipelineRun.objects.filter(pipeline__name=name, trigger="daemon").order_by("queued_at")


def end(run: PipelineRun, status: str, at: datetime, code: int = 1) -> None:
    """The daemon run as if a worker followed it to this end at `at`."""
    PipelineRun.objects.filter(pk=run.pk).update(status=Status.CLAIMED)
    run = PipelineRun.take(run.pk, "host:1:t")
    run.finish(status, exit_code=code, finished_at=at)


@pytest.fixture
def keeper(make_pipeline, settings):
    settings.MAX_CONCURRENT_RUNS = 0  # nothing executes: these tests look at the decisions
    make_pipeline("keeper", config={"restart_on_crash": True, "restart_cooldown": 30, "timeout": 0})
    discover()
    return Pipeline.objects.get(name="keeper")


@pytest.mark.django_db
def test_a_daemon_is_started_once_and_restarted_after_its_cooldown(keeper):
    (first,) = supervise_daemons(T0)
    assert first.trigger == "daemon"
    assert supervise_daemons(T0 + timedelta(seconds=1)) == []  # one copy, however often asked
    end(first, Status.FAILED, T0 + timedelta(seconds=5))
    assert supervise_daemons(T0 + timedelta(seconds=20)) == []  # cooling down
    assert (
        Daemon.objects.get().state_in_words(None, T0 + timedelta(seconds=20))
        == "waiting to restart"
    )
    (second,) = supervise_daemons(T0 + timedelta(seconds=36))
    daemon = Daemon.objects.get()
    assert daemon.restarts == 1 and daemon.last_exit == "failed (exit code 1)"
    assert second.retries.count() == 0  # daemons are restarted, never retried


@pytest.mark.django_db
def test_a_crash_loop_backs_off(keeper):
    now = T0
    for _ in range(CRASH_LOOP):
        (run,) = supervise_daemons(now)
        end(run, Status.FAILED, now + timedelta(seconds=1))
        now += timedelta(seconds=40)  # past the 30 s cooldown each time
    # The fifth crash in ten minutes: the next start waits twice the cooldown.
    assert supervise_daemons(now) == []
    assert len(Daemon.objects.get().crash_times) == CRASH_LOOP
    assert Daemon.objects.get().state_in_words(None, now) == "crash loop: backing off"
    assert Daemon.objects.get().start_not_before == T0 + timedelta(seconds=161 + 60)


@pytest.mark.django_db
def test_a_clean_exit_stays_stopped(keeper):
    (run,) = supervise_daemons(T0)
    end(run, Status.SUCCEEDED, T0 + timedelta(seconds=1), code=0)
    assert supervise_daemons(T0 + timedelta(hours=1)) == []
    assert Daemon.objects.get().state_in_words(None) == "stopped"


@pytest.mark.django_db
def test_restart_interval_stops_and_starts_it_again(make_pipeline, settings):
    settings.MAX_CONCURRENT_RUNS = 0
    make_pipeline(
        "nightly_restart",
        config={"restart_on_crash": True, "restart_interval": "0 3 * * *", "timeout": 0},
    )
    discover()
    (run,) = supervise_daemons(T0)
    PipelineRun.objects.filter(pk=run.pk).update(status=Status.CLAIMED, container_id="c")
    run = PipelineRun.take(run.pk, "host:1:t")
    assert Daemon.objects.get().next_restart_at == datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    three = datetime(2026, 11, 24, 3, 0, 30, tzinfo=UTC)
    assert supervise_daemons(three) == []
    run.refresh_from_db()
    assert run.cancel_requested_at is not None  # being stopped for the restart
    run.finish(Status.SUCCEEDED, exit_code=0, finished_at=three)  # (the cancel wins)
    (again,) = supervise_daemons(three + timedelta(seconds=2))
    assert again.pk != run.pk
    assert not Daemon.objects.get().paused  # stopped by the supervisor, not by a person


@pytest.mark.django_db
def test_a_daemon_that_is_not_wanted_is_stopped(keeper, pipelines_dir):
    (run,) = supervise_daemons(T0)
    (pipelines_dir / "keeper" / "pipeline.json").write_text(
        '{"restart_on_crash": true, "enabled": false}'
    )
    discover()
    supervise_daemons(T0 + timedelta(seconds=1))
    run.refresh_from_db()
    assert run.status == Status.CANCELLED  # it had not started: cancelled at once
    assert supervise_daemons(T0 + timedelta(minutes=5)) == []


@pytest.mark.django_db
def test_a_persons_cancel_pauses_the_daemon_until_resumed(keeper, client, admin_user):
    (run,) = supervise_daemons(T0)
    run.request_cancel()
    assert supervise_daemons(T0 + timedelta(minutes=5)) == []
    assert Daemon.objects.get().paused
    client.force_login(admin_user)
    page = client.get(keeper.get_absolute_url()).content.decode()
    assert 'class="daemon-state">paused' in page
    client.post(f"/runs/daemon/{keeper.name}/", {"paused": "no"})
    assert len(supervise_daemons(T0 + timedelta(minutes=6))) == 1


@pytest.mark.django_db
def test_daemons_never_take_ordinary_runs_slots(keeper, make_pipeline, settings):
    settings.MAX_CONCURRENT_RUNS = 1
    settings.MAX_DAEMON_RUNS = 1
    make_pipeline("ordinary")
    discover()
    PipelineRun.objects.all().delete()
    supervise_daemons(timezone.now())
    ordinary = PipelineRun.enqueue(Pipeline.objects.get(name="ordinary"), trigger="manual")
    PipelineRun.claim_runs()
    statuses = dict(PipelineRun.objects.values_list("trigger", "status"))
    assert statuses == {"daemon": Status.CLAIMED, "manual": Status.CLAIMED}
    assert PipelineRun.objects.get(pk=ordinary.pk).status == Status.CLAIMED


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
def test_a_daemon_crashes_and_is_started_again_on_the_engine(make_pipeline):
    make_pipeline(
        "crasher",
        main="import os, sys\nprint('up', os.environ['FASTFLOW_RUN_ID'][:8])\nsys.exit(3)\n",
        config={"restart_on_crash": True, "restart_cooldown": 0, "timeout": 0},
    )
    discover()
    (first,) = supervise_daemons()
    first = execute(first)
    assert first.status == Status.FAILED and first.exit_code == 3, log_text(first)
    (second,) = supervise_daemons()
    second = execute(second)
    assert output_lines(second) == [f"up {str(second.public_id)[:8]}"]
    daemon = Daemon.objects.get(pipeline__name="crasher")
    assert daemon.restarts == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
def test_a_daemon_survives_a_killed_worker_without_a_second_copy(
    make_pipeline, settings, tmp_path, docker_engine
):
    make_pipeline(
        "server",
        main="import time\nfor i in range(600):\n    print('serving', i, flush=True)\n"
        "    time.sleep(0.5)\n",
        config={"restart_on_crash": True, "timeout": 0},
    )
    discover()
    worker = Worker(settings, tmp_path)
    worker.start()
    try:
        assert wait_for(lambda: daemon_runs("server").exists(), timeout=30)
        run = daemon_runs("server").get()
        assert wait_for(lambda: "O serving 2\n" in read_log(run), timeout=60)
        worker.kill()
        worker.start()
        assert wait_for(lambda: "re-attached" in read_log(run), timeout=60)
        assert wait_for(lambda: "O serving 12\n" in read_log(run), timeout=60)
        # Still the one run and the one container: the supervisor saw it in flight.
        assert daemon_runs("server").count() == 1
        containers = docker_engine.api.containers(filters={"label": "fastflow.pipeline=server"})
        assert len(containers) == 1
    finally:
        worker.kill()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
def test_on_the_engine_a_disabled_daemon_is_stopped(make_pipeline, pipelines_dir, docker_engine):
    make_pipeline(
        "ticking",
        main="import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.3)\n",
        config={"restart_on_crash": True, "restart_cooldown": 0, "timeout": 0},
    )
    discover()
    (run,) = supervise_daemons()
    follower = threading.Thread(target=execute, args=(run,), daemon=True)
    follower.start()
    assert wait_for(lambda: "O tick\n" in read_log(run), timeout=60)
    (pipelines_dir / "ticking" / "pipeline.json").write_text(
        '{"restart_on_crash": true, "enabled": false, "timeout": 0}'
    )
    discover()
    assert supervise_daemons() == []
    follower.join(timeout=60)
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    assert docker_engine.api.containers(filters={"label": "fastflow.pipeline=ticking"}) == []
    assert supervise_daemons() == []  # and it stays stopped
    assert not Daemon.objects.get(pipeline__name="ticking").paused  # not a person's pause
