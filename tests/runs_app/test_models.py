"""The run record: its states, and indexes that keep the common questions fast at scale."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def pipeline():
    now = timezone.now()
    return Pipeline.objects.create(
        name="etl", folder_path="/p/etl", discovered_at=now, last_seen_at=now
    )


def test_a_new_run_is_queued_with_a_public_uuid(pipeline):
    run = PipelineRun.objects.create(pipeline=pipeline)
    assert run.status == PipelineRun.Status.QUEUED
    assert run.public_id.version == 4
    assert run.attempt == 1 and run.trigger == PipelineRun.Trigger.MANUAL
    assert not run.is_finished
    assert run.duration is None
    assert str(run).startswith(f"etl #{str(run.public_id)[:8]}")


def test_every_final_status_is_finished(pipeline):
    for status in PipelineRun.FINAL_STATUSES:
        assert PipelineRun(pipeline=pipeline, status=status).is_finished
    for status in PipelineRun.ACTIVE_STATUSES:
        assert not PipelineRun(pipeline=pipeline, status=status).is_finished


def test_duration(pipeline):
    start = timezone.now() - timedelta(seconds=90)
    run = PipelineRun(
        pipeline=pipeline, started_at=start, finished_at=start + timedelta(seconds=30)
    )
    assert run.duration == timedelta(seconds=30)


def test_retries_point_at_the_run_they_retry(pipeline):
    first = PipelineRun.objects.create(pipeline=pipeline, status=PipelineRun.Status.FAILED)
    retry = PipelineRun.objects.create(
        pipeline=pipeline, attempt=2, retry_of=first, trigger=PipelineRun.Trigger.RETRY
    )
    assert list(first.retries.all()) == [retry]


def test_a_pipeline_with_runs_cannot_be_deleted(pipeline):
    from django.db.models import ProtectedError

    PipelineRun.objects.create(pipeline=pipeline)
    with pytest.raises(ProtectedError):
        pipeline.delete()


def plan(queryset) -> str:
    """The database's query plan, with sequential scans discouraged on PostgreSQL
    (on a near-empty table its planner rightly prefers them; at 100k rows it does not)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
        return queryset.explain()


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (lambda p: PipelineRun.objects.filter(pipeline=p)[:50], "run_pipeline_newest"),
        (
            lambda p: PipelineRun.objects.filter(status="queued").order_by("queued_at", "id")[:50],
            "run_status_fifo",
        ),
        (
            lambda p: PipelineRun.objects.filter(
                queued_at__gte=timezone.now() - timedelta(days=1), queued_at__lt=timezone.now()
            )[:50],
            "run_newest",
        ),
        (lambda p: PipelineRun.objects.all()[:50], "run_newest"),
    ],
)
def test_common_run_queries_use_an_index_and_no_sort(pipeline, query, index):
    PipelineRun.objects.bulk_create(PipelineRun(pipeline=pipeline) for _ in range(20))
    text = plan(query(pipeline))
    assert index in text, text
    assert "TEMP B-TREE" not in text  # SQLite: no sort step
    assert "Sort" not in text.replace("Sort Key", "")  # PostgreSQL: no sort step
