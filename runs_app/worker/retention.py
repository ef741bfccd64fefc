"""Retention, once a day in the worker: the logs and CPU/memory samples of ended runs older
than LOG_RETENTION_DAYS, or beyond the newest LOG_RETENTION_RUNS of their pipeline, are
removed — archived first, compressed by day, to BACKUP_DIR when it is set — and the run
rows stay, saying "log removed". Run rows themselves go after RUN_RETENTION_DAYS. Nothing
of a run that has not ended is ever touched. Code bundles nothing names any more go too."""

from __future__ import annotations

import contextlib
import json
import logging
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import ProtectedError, Q, QuerySet
from django.utils import timezone

from pipelines_app.models import CodeBundle, Pipeline
from runs_app.models import Chore, LogChunk, LogText, PipelineRun, RunArtifact
from runs_app.stored_logs import log_text, samples_after

logger = logging.getLogger(__name__)
CHORE = "retention"
BATCH = 500


@dataclass
class Report:
    logs_removed: int = 0
    logs_archived: int = 0
    runs_pruned: int = 0
    bundles_removed: int = 0


def run_daily() -> Report | None:
    """Apply retention if no worker did today; None when it was not this one's turn."""
    if not Chore.claim(CHORE, every=timedelta(hours=23)):
        return None
    try:
        report = apply()
    except Exception as problem:
        logger.exception("retention failed")
        Chore.done(CHORE, {}, error=str(problem))
        raise
    Chore.done(CHORE, asdict(report))
    if report.logs_removed or report.runs_pruned or report.bundles_removed:
        logger.info("retention: %s", asdict(report))
    return report


def apply(now: datetime | None = None) -> Report:
    now = now or timezone.now()
    report = Report()
    ended = PipelineRun.objects.filter(status__in=PipelineRun.FINAL_STATUSES)
    if settings.RUN_RETENTION_DAYS:
        old = ended.filter(finished_at__lt=now - timedelta(days=settings.RUN_RETENTION_DAYS))
        for batch in _batches(old):
            _remove_logs(batch, report, now)
            _, deleted = ended.filter(pk__in=[run.pk for run in batch]).delete()
            report.runs_pruned += deleted.get(PipelineRun._meta.label, 0)
    with_logs = ended.filter(log_removed_at__isnull=True)
    if settings.LOG_RETENTION_DAYS:
        cutoff = now - timedelta(days=settings.LOG_RETENTION_DAYS)
        for batch in _batches(with_logs.filter(finished_at__lt=cutoff)):
            _remove_logs(batch, report, now)
    if settings.LOG_RETENTION_RUNS:
        for pipeline_id in ended.values_list("pipeline_id", flat=True).distinct().order_by():
            newest = PipelineRun.objects.filter(pipeline_id=pipeline_id).order_by(
                "-queued_at", "-id"
            )[: settings.LOG_RETENTION_RUNS]
            beyond = with_logs.filter(pipeline_id=pipeline_id).exclude(
                pk__in=list(newest.values_list("pk", flat=True))
            )
            for batch in _batches(beyond):
                _remove_logs(batch, report, now)
    # Code bundles that no pipeline and no run names any more.
    named = Pipeline.objects.filter(bundle__isnull=False).values_list("bundle_id", flat=True)
    unused = CodeBundle.objects.filter(runs__isnull=True).exclude(pk__in=list(named))
    with contextlib.suppress(ProtectedError):  # a run named one meanwhile: tomorrow, then
        report.bundles_removed = unused.delete()[1].get(CodeBundle._meta.label, 0)
    return report


def _batches(runs: QuerySet[PipelineRun]):
    """Runs in batches by primary key (the set shrinks as it is worked on)."""
    last = 0
    while batch := list(runs.filter(pk__gt=last).select_related("pipeline").order_by("pk")[:BATCH]):
        yield batch
        last = batch[-1].pk


def _remove_logs(runs: list[PipelineRun], report: Report, now: datetime) -> None:
    removed = []
    for run in runs:
        if run.log_removed_at is not None:
            continue
        if settings.BACKUP_DIR and LogChunk.objects.filter(run=run).exists():
            archive_run(run)
            report.logs_archived += 1
        removed.append(run.pk)
    # Only runs still ended lose their log (a row is never taken back from a live run).
    ended = PipelineRun.objects.filter(Q(pk__in=removed), status__in=PipelineRun.FINAL_STATUSES)
    ended_ids = list(ended.values_list("pk", flat=True))
    LogChunk.objects.filter(run_id__in=ended_ids).delete()
    LogText.objects.filter(run_id__in=ended_ids).delete()  # what the search across runs reads
    RunArtifact.objects.filter(run_id__in=ended_ids).delete()  # a models run's docs and graph
    report.logs_removed += ended.update(log_removed_at=now)


def archive_path(day) -> Path:
    return Path(settings.BACKUP_DIR) / "logs" / f"{day:%Y-%m-%d}.zip"


def archive_run(run: PipelineRun) -> None:
    """Add a run's log and samples to the archive of the day it was queued (a
    deflate-compressed zip; `<pipeline>/<run id>.log` and `.metrics`, as records and JSON
    lines)."""
    target = archive_path(run.queued_at.astimezone(timezone.get_current_timezone()).date())
    target.parent.mkdir(parents=True, exist_ok=True)
    samples = samples_after(run.pk, 0)[0]
    files = {
        f"{run.public_id}.log": log_text(run.pk),
        f"{run.public_id}.metrics": "".join(json.dumps(sample) + "\n" for sample in samples),
    }
    with zipfile.ZipFile(target, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        present = set(archive.namelist())
        for file_name, text in files.items():
            name = f"{run.pipeline.name}/{file_name}"
            if text and name not in present:
                archive.writestr(name, text)
