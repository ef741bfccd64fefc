"""The running totals /metrics reads: kept as runs end, and made for the runs that ended
before they existed (migration 0008)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from runs_app.models import RunTally
from runs_app.models.tally import DURATION_BUCKETS

pytestmark = pytest.mark.django_db(transaction=True)


BEFORE = [("runs_app", "0007_daemons"), ("pipelines_app", "0005_encrypted_fields")]


@pytest.fixture
def schema_before_tallies():
    """The database as the release before tallies left it; migrated forward again after,
    whatever the test did (the next tests need the current schema)."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    yield executor.loader.project_state(BEFORE).apps
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_the_migration_tallies_runs_that_ended_before(schema_before_tallies):
    old = schema_before_tallies
    Pipeline, PipelineRun = (
        old.get_model("pipelines_app", "Pipeline"),
        old.get_model("runs_app", "PipelineRun"),
    )
    now = timezone.now()
    etl = Pipeline.objects.create(name="etl", folder_path="/p", discovered_at=now, last_seen_at=now)
    for seconds, status in ((3, "succeeded"), (45, "succeeded"), (7, "failed")):
        PipelineRun.objects.create(
            pipeline=etl, status=status, started_at=now - timedelta(seconds=seconds),
            finished_at=now, setup_duration=timedelta(seconds=0.3),
        )  # fmt: skip
    PipelineRun.objects.create(pipeline=etl, status="queued")
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([("runs_app", "0008_run_tally")])
    succeeded = RunTally.objects.get(pipeline_name="etl", status="succeeded")
    assert succeeded.count == 2 and succeeded.duration_sum == pytest.approx(48, abs=0.1)
    assert succeeded.duration_buckets[1] == 1  # 3 s: up to 5 s
    assert succeeded.duration_buckets[DURATION_BUCKETS.index(60)] == 1  # 45 s: up to 60 s
    assert succeeded.setup_sum == pytest.approx(0.6)
    assert RunTally.objects.get(status="failed").count == 1
    assert not RunTally.objects.filter(status="queued").exists()
