"""The run's state machine (runs_app.models.run): the queue (FIFO, instance and per-pipeline
limits, due times), exactly-once claims and takes, the lease, release, cancel, finish and
the retry that goes with it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun, RunRefused

claim_runs = PipelineRun.claim_runs

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
    assert PipelineRun.objects.filter(status=Status.CLAIMED).count() == 3
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
    assert run.attempt == 1


def test_a_queued_run_is_cancelled_at_once(pipelines):
    (run,) = queue(pipelines["a"])
    assert run.request_cancel() == "cancelled"
    assert run.status == Status.CANCELLED and run.finished_at
    assert claim_runs() == []
    assert run.request_cancel() == "finished"


def held(pipelines, name="a", worker="host:1:t"):
    """A run claimed and taken by `worker` (its lease holder)."""
    (run,) = queue(pipelines[name])
    claim_runs()
    return PipelineRun.take(run.pk, worker)


def test_a_claimed_run_without_a_container_is_cancelled_at_once(pipelines):
    (run,) = queue(pipelines["a"])
    claim_runs()
    assert run.request_cancel() == "cancelled"
    assert PipelineRun.take(run.pk, "host:1:t") is None  # nothing left to follow


def test_a_run_with_a_container_is_stopped_by_its_follower(pipelines):
    run = held(pipelines)
    assert run.mark_started("c0ffee")
    assert run.release()  # its follower gave up (the engine went away)
    run.refresh_from_db()
    assert run.status == Status.CLAIMED and run.container_id == "c0ffee"
    assert run.request_cancel() == "stopping"  # the next follower stops the container
    assert run.cancel_is_requested()


def test_a_running_run_is_asked_to_stop_and_stays_cancelled(pipelines):
    run = held(pipelines)
    assert run.request_cancel() == "stopping"
    assert run.cancel_is_requested()
    # The follower reports the exit it saw; the cancel request wins, once and for good.
    assert run.finish(Status.FAILED, exit_code=143, failure_reason="exit_code")
    assert run.status == Status.CANCELLED and run.exit_code == 143
    assert not run.finish(Status.FAILED, exit_code=1)
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    assert not run.retries.exists()  # a cancelled run is never retried


def test_only_one_worker_takes_a_run(pipelines):
    (run,) = queue(pipelines["a"])
    assert PipelineRun.take(run.pk, "host:1:t") is None  # still queued: nothing to take
    claim_runs()
    assert PipelineRun.take(run.pk, "host:1:t").worker_id == "host:1:t"
    assert PipelineRun.take(run.pk, "host:2:t") is None
    assert PipelineRun.take(run.pk, "host:1:t") is None  # a redelivered task


def test_only_the_lease_holder_acts_for_a_run(pipelines):
    mine = held(pipelines)
    theirs = PipelineRun.objects.get(pk=mine.pk)
    theirs.worker_id = "host:2:t"
    assert not theirs.beat()
    assert not theirs.mark_started("c0ffee")
    assert not theirs.release()
    assert not theirs.finish(Status.SUCCEEDED, exit_code=0)
    assert mine.beat()
    assert mine.finish(Status.SUCCEEDED, exit_code=0)


def test_a_released_run_waits_for_a_follower_and_keeps_its_container(pipelines):
    first = held(pipelines, worker="host:1:t")
    first.mark_started("c0ffee")
    assert first.release()
    assert not first.beat()  # released: the old follower holds nothing any more
    second = PipelineRun.take(first.pk, "host:2:t")
    assert second.status == Status.RUNNING and second.container_id == "c0ffee"
    assert not first.finish(Status.SUCCEEDED, exit_code=0)
    assert second.finish(Status.SUCCEEDED, exit_code=0)


def test_stale_and_dead_followers_lose_their_runs(pipelines, settings):
    silent, dead, alive = (held(pipelines, worker=f"host:{n}:t") for n in (1, 2, 3))
    stale = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT + 1)
    PipelineRun.objects.filter(pk=silent.pk).update(heartbeat_at=stale)
    released = PipelineRun.release_stale(dead_workers=["host:2:t"])
    assert sorted(released) == sorted([silent.pk, dead.pk])
    statuses = dict(PipelineRun.objects.values_list("pk", "status"))
    assert statuses == {silent.pk: Status.CLAIMED, dead.pk: Status.CLAIMED, alive.pk: "running"}
    assert not silent.beat()  # a follower that comes back finds it lost the run
    assert alive.beat()


def test_a_final_run_is_never_finished_again(pipelines):
    run = held(pipelines)
    assert run.finish(Status.SUCCEEDED, exit_code=0)
    assert not run.finish(Status.FAILED, exit_code=1)
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED and run.exit_code == 0


def test_a_failed_attempt_gets_its_retry_with_its_end_and_only_one(pipelines, make_pipeline):
    make_pipeline("flaky", config={"retry_attempts": 2})
    discover()
    pipelines = {p.name: p for p in Pipeline.objects.all()}
    run = held(pipelines, "flaky")
    assert run.retry_due_in(Status.FAILED, "exit_code") == 60  # the default backoff
    assert run.finish(Status.FAILED, exit_code=1, failure_reason="exit_code")
    (retry,) = run.retries.all()
    assert (retry.attempt, retry.trigger, retry.status) == (2, "retry", Status.QUEUED)
    assert retry.not_before > timezone.now() + timedelta(seconds=50)
    assert run._enqueue_retry() is None  # asked again: still one
    with pytest.raises(IntegrityError), transaction.atomic():
        PipelineRun.objects.create(pipeline=run.pipeline, retry_of=run, attempt=2)


def test_a_secret_that_does_not_decrypt_is_not_retried(pipelines, make_pipeline):
    make_pipeline("flaky", config={"retry_attempts": 2})
    discover()
    run = held({p.name: p for p in Pipeline.objects.all()}, "flaky")
    assert run.retry_due_in(Status.FAILED, "secret") is None
    run.finish(Status.FAILED, failure_reason="secret")
    assert not run.retries.exists()


def test_the_last_attempt_is_not_retried(pipelines, make_pipeline):
    make_pipeline("flaky", config={"retry_attempts": 1})
    discover()
    flaky = Pipeline.objects.get(name="flaky")
    (run,) = queue(flaky, attempt=2)
    claim_runs()
    run = PipelineRun.take(run.pk, "host:1:t")
    run.finish(Status.FAILED, exit_code=1, failure_reason="exit_code")
    assert not run.retries.exists()
