"""Retention against a controllable clock: logs and samples of old or surplus ended runs go
(archived by day to BACKUP_DIR first), rows stay saying so, rows go after
RUN_RETENTION_DAYS, a run that has not ended is never touched; a run's samples are capped."""

from __future__ import annotations

import zipfile
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.logs import MetricsWriter
from runs_app.models import LogChunk, PipelineRun, RunArtifact, RunTally
from runs_app.models.chunk import pack
from runs_app.stored_logs import samples_after
from runs_app.worker import retention
from tests.runs_app.conftest import run_log

pytestmark = pytest.mark.django_db
Status = PipelineRun.Status
NOW = timezone.now()


@pytest.fixture
def catalogue(make_pipeline, settings, tmp_path):
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0
    settings.BACKUP_DIR = None
    make_pipeline("etl")
    make_pipeline("report")
    discover()
    return {p.name: p for p in Pipeline.objects.all()}


def run_with_log(pipeline: Pipeline, days_ago: float, status=Status.SUCCEEDED) -> PipelineRun:
    moment = NOW - timedelta(days=days_ago)
    run = PipelineRun.enqueue(pipeline, trigger="manual")
    ended = {"finished_at": moment} if status in PipelineRun.FINAL_STATUSES else {}
    PipelineRun.objects.filter(pk=run.pk).update(
        status=status, queued_at=moment, started_at=moment, **ended
    )
    run.refresh_from_db()
    writer = run_log(run)
    writer.write("O", f"output of {run.short_id}")
    writer.close()
    samples = MetricsWriter(run.pk, background=False)
    samples.sample(12.5, 1024)
    samples.close()
    RunArtifact.objects.create(run=run, name="dag.json", size=2, data=pack(b"[]"))
    return run


def files_of(run: PipelineRun) -> list[bool]:
    """Whether the run's log and its samples are stored (and its artifacts with them)."""
    kinds = set(LogChunk.objects.filter(run_id=run.pk).values_list("kind", flat=True))
    has_artifacts = RunArtifact.objects.filter(run_id=run.pk).exists()
    assert has_artifacts == ("lines" in kinds)
    return ["lines" in kinds, "samples" in kinds]


def test_logs_older_than_the_retention_days_go_and_rows_stay(catalogue, settings):
    settings.LOG_RETENTION_DAYS = 30
    old = run_with_log(catalogue["etl"], 40)
    recent = run_with_log(catalogue["etl"], 5)
    old_but_running = run_with_log(catalogue["etl"], 45, status=Status.RUNNING)
    report = retention.apply(now=NOW)
    assert report.logs_removed == 1 and report.runs_pruned == 0
    old.refresh_from_db()
    assert files_of(old) == [False, False] and old.log_removed_at == NOW
    assert files_of(recent) == [True, True] and files_of(old_but_running) == [True, True]
    assert retention.apply(now=NOW).logs_removed == 0  # nothing twice


def test_only_the_newest_runs_of_each_pipeline_keep_their_logs(catalogue, settings):
    settings.LOG_RETENTION_RUNS = 2
    etl = [run_with_log(catalogue["etl"], days) for days in (4, 3, 2, 1)]
    report = [run_with_log(catalogue["report"], days) for days in (9, 8)]
    queued = PipelineRun.enqueue(catalogue["etl"], trigger="manual")  # the newest, not ended
    retention.apply(now=NOW)
    kept = [bool(files_of(run)[0]) for run in etl]
    # the queued run counts among the newest two: one ended log stays beside it
    assert kept == [False, False, False, True]
    assert all(files_of(run)[0] for run in report)
    queued.refresh_from_db()
    assert queued.status == Status.QUEUED and queued.log_removed_at is None


def test_logs_are_archived_by_day_before_they_go(catalogue, settings, tmp_path):
    settings.LOG_RETENTION_DAYS = 30
    settings.BACKUP_DIR = tmp_path / "backup"
    first = run_with_log(catalogue["etl"], 40)
    second = run_with_log(catalogue["report"], 40)
    other_day = run_with_log(catalogue["etl"], 50)
    report = retention.apply(now=NOW)
    assert report.logs_archived == 3
    day = first.queued_at.astimezone(timezone.get_current_timezone()).date()
    with zipfile.ZipFile(settings.BACKUP_DIR / "logs" / f"{day:%Y-%m-%d}.zip") as archive:
        names = set(archive.namelist())
        assert names == {
            f"etl/{first.public_id}.log", f"etl/{first.public_id}.metrics",
            f"report/{second.public_id}.log", f"report/{second.public_id}.metrics",
        }  # fmt: skip
        assert f"output of {first.short_id}" in archive.read(f"etl/{first.public_id}.log").decode()
        assert archive.infolist()[0].compress_type == zipfile.ZIP_DEFLATED
    other = other_day.queued_at.astimezone(timezone.get_current_timezone()).date()
    assert (settings.BACKUP_DIR / "logs" / f"{other:%Y-%m-%d}.zip").exists()


def test_run_rows_go_after_their_own_retention_and_counters_stay(catalogue, settings):
    settings.RUN_RETENTION_DAYS = 90
    ancient = run_with_log(catalogue["etl"], 100)
    RunTally.count_run("etl", Status.SUCCEEDED)
    kept = run_with_log(catalogue["etl"], 10)
    report = retention.apply(now=NOW)
    assert report.runs_pruned == 1 and report.logs_removed >= 0
    assert not PipelineRun.objects.filter(pk=ancient.pk).exists()
    assert files_of(ancient) == [False, False]
    assert PipelineRun.objects.filter(pk=kept.pk).exists()
    assert RunTally.objects.get(pipeline_name="etl", status=Status.SUCCEEDED).count == 1


def test_the_run_page_says_the_log_was_removed(catalogue, settings, admin_client):
    settings.LOG_RETENTION_DAYS = 30
    old = run_with_log(catalogue["etl"], 40)
    retention.apply(now=NOW)
    page = admin_client.get(old.get_absolute_url()).content.decode()
    assert 'id="log-removed"' in page and 'id="live-log"' not in page
    assert admin_client.get(reverse("runs_app:log", args=[old.public_id])).status_code == 410


def test_retention_runs_once_a_day_across_workers(catalogue, settings):
    settings.LOG_RETENTION_DAYS = 30
    run_with_log(catalogue["etl"], 40)
    assert retention.run_daily().logs_removed == 1
    assert retention.run_daily() is None  # another worker's (or a later hour's) turn: not today


def test_a_runs_samples_are_capped_and_keep_the_whole_span(catalogue, settings):
    settings.METRICS_MAX_SAMPLES = 100
    run = PipelineRun.enqueue(catalogue["etl"], trigger="manual")
    writer = MetricsWriter(run.pk, background=False)
    for number in range(1000):
        writer.sample(float(number), number)
        if number % 7 == 0:
            writer.ship()  # (the shipper's turns)
        assert writer.stored < 100
    writer.close()
    kept = [sample["cpu"] for sample in samples_after(run.pk, 0)[0]]
    assert 50 <= len(kept) < 100
    assert kept == sorted(kept) and kept[0] < 20 and kept[-1] > 900  # thinned, not cut
