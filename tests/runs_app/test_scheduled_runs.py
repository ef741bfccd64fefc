"""Schedules for real: two worker processes (two clusters) tick side by side, and every due
time of an every-second schedule becomes exactly one run, which runs to success."""

from __future__ import annotations

import pytest

from pipelines_app.discovery import discover
from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from tests.runs_app.conftest import log_text
from tests.runs_app.test_worker import Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]


def test_two_workers_fire_each_due_time_once_and_the_runs_succeed(
    make_pipeline, settings, tmp_path
):
    settings.MAX_CONCURRENT_RUNS = 3
    make_pipeline(
        "heartbeat",
        main="import os\nprint('beat', os.environ['FASTFLOW_RUN_ID'])\n",
        config={"schedule_interval_seconds": 1},
    )
    discover()
    (tmp_path / "second").mkdir()
    workers = [Worker(settings, tmp_path), Worker(settings, tmp_path / "second")]
    for worker in workers:
        worker.start()
    try:
        finished = PipelineRun.objects.filter(
            trigger=PipelineRun.Trigger.SCHEDULE, status=PipelineRun.Status.SUCCEEDED
        )
        assert wait_for(lambda: finished.count() >= 4, timeout=120), (
            tmp_path / "worker.log"
        ).read_text()
    finally:
        for worker in workers:
            worker.kill()
    runs = list(PipelineRun.objects.filter(trigger=PipelineRun.Trigger.SCHEDULE))
    due_times = [run.scheduled_for for run in runs]
    assert len(due_times) == len(set(due_times))  # no due time fired twice
    succeeded = [run for run in runs if run.status == PipelineRun.Status.SUCCEEDED]
    assert all(f"beat {run.public_id}" in log_text(run) for run in succeeded)
    assert all(run.config_id == "default" and run.schedule_id for run in runs)
