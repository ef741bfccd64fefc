"""The queue: FIFO, instance and per-pipeline limits, due times, and exactly-once claims."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun, RunRefused
from runs_app.queue import claim_runs

pytestmark = pytest.mark.django_db

Status = PipelineRun.Status


@pytest.fixture
def pipelines(make_pipeline, settings):
    settings.MAX_CONCURRENT_RUNS = 3
    make_pipeline("a")
    make_pipeline("b")
    make_pipeline("solo", config={"max_instances": 1})
    make_pipeline("broken", config={"timeout": "x"})
    discover()
    return {p.name: p for p in Pipeline.objects.all()}


def queue(pipeline, n=1, **kwargs):
    """Queued rows without triggering dispatch (tests claim by hand)."""
    return [
        PipelineRun.objects.create(pipeline=pipeline, queued_at=timezone.now(), **kwargs)
        for _ in range(n)
    ]


def test_claims_oldest_first_up_to_the_instance_limit(pipelines):
    runs = queue(pipelines["a"], 5)
    claimed = claim_runs()
    assert claimed == [r.pk for r in runs[:3]]
    assert PipelineRun.objects.filter(status=Status.RUNNING).count() == 3
    assert claim_runs() == []  # full
    PipelineRun.objects.filter(pk=runs[0].pk).update(status=Status.SUCCEEDED)
    assert claim_runs() == [runs[3].pk]


def test_max_instances_holds_a_pipeline_back_without_blocking_others(pipelines):
    solo = queue(pipelines["solo"], 2)
    other = queue(pipelines["b"], 1)
    assert claim_runs() == [solo[0].pk, other[0].pk]
    assert claim_runs() == []
    PipelineRun.objects.filter(pk=solo[0].pk).update(status=Status.FAILED)
    assert claim_runs() == [solo[1].pk]


def test_a_retry_waits_until_it_is_due(pipelines):
    later = queue(pipelines["a"], 1, not_before=timezone.now() + timedelta(minutes=5))
    due = queue(pipelines["a"], 1, not_before=timezone.now() - timedelta(seconds=1))
    assert claim_runs() == [due[0].pk]
    PipelineRun.objects.filter(pk=later[0].pk).update(not_before=timezone.now())
    assert claim_runs() == [later[0].pk]


def test_queue_position(pipelines):
    runs = queue(pipelines["a"], 3)
    assert [r.queue_position for r in runs] == [1, 2, 3]
    claim_runs()
    runs[0].refresh_from_db()
    assert runs[0].queue_position is None


def test_enqueue_refuses_invalid_and_missing_pipelines(pipelines):
    with pytest.raises(RunRefused, match="cannot run until its configuration is fixed"):
        PipelineRun.enqueue(pipelines["broken"], trigger="manual")
    pipelines["a"].state = Pipeline.State.MISSING
    with pytest.raises(RunRefused, match="its folder is gone"):
        PipelineRun.enqueue(pipelines["a"], trigger="manual")


def test_enqueue_records_who_and_what(pipelines, admin_user, settings, tmp_path):
    settings.LOGS_DIR = tmp_path
    run = PipelineRun.enqueue(
        pipelines["a"], trigger=PipelineRun.Trigger.MANUAL, user=admin_user, parameters={"X": "1"}
    )
    assert run.triggered_by == admin_user
    assert run.parameters == {"X": "1"}
    assert run.log_path == str(tmp_path / f"{run.public_id}.log")
    assert run.attempt == 1


def test_a_queued_run_is_cancelled_at_once(pipelines):
    (run,) = queue(pipelines["a"])
    assert run.request_cancel() == "cancelled"
    assert run.status == Status.CANCELLED and run.finished_at
    assert claim_runs() == []
    assert run.request_cancel() == "finished"


def test_a_running_run_is_asked_to_stop_and_stays_cancelled(pipelines):
    (run,) = queue(pipelines["a"])
    claim_runs()
    assert PipelineRun.take(run.pk, "host:1")
    run.refresh_from_db()
    assert run.request_cancel() == "stopping"
    assert run.cancel_is_requested()
    # The follower reports the exit it saw; the cancel request wins, once and for good.
    assert run.finish(Status.FAILED, exit_code=143, failure_reason="exit_code")
    assert run.status == Status.CANCELLED and run.exit_code == 143
    assert not run.finish(Status.FAILED, exit_code=1)
    run.refresh_from_db()
    assert run.status == Status.CANCELLED


def test_only_one_worker_takes_a_run(pipelines, settings):
    (run,) = queue(pipelines["a"])
    assert not PipelineRun.take(run.pk, "host:1")  # still queued: nothing to take
    claim_runs()
    assert PipelineRun.take(run.pk, "host:1")
    assert not PipelineRun.take(run.pk, "host:2")
    assert not PipelineRun.take(run.pk, "host:1")  # a redelivered task of the same worker
    # A worker known to be dead, or silent for too long, loses the run to another.
    assert PipelineRun.take(run.pk, "host:2", orphaned_workers=["host:1"])
    stale = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT + 1)
    PipelineRun.objects.filter(pk=run.pk).update(heartbeat_at=stale)
    assert PipelineRun.take(run.pk, "host:3")


def test_heartbeat_fails_after_a_takeover(pipelines):
    (run,) = queue(pipelines["a"])
    claim_runs()
    PipelineRun.take(run.pk, "host:1")
    run.refresh_from_db()
    assert run.beat()
    PipelineRun.take(run.pk, "host:2", orphaned_workers=["host:1"])
    assert not run.beat()


def test_a_final_run_is_never_finished_again(pipelines):
    (run,) = queue(pipelines["a"])
    claim_runs()
    run.refresh_from_db()
    assert run.finish(Status.SUCCEEDED, exit_code=0)
    assert not run.finish(Status.FAILED, exit_code=1)
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED and run.exit_code == 0
