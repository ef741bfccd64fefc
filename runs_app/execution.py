"""A run's life in the worker: take it, execute it, record the truth, retry, start the next.

`execute_run` is the django-q2 task. It may be delivered twice (a broker redelivery, a
reconcile) or reach a run whose earlier follower died; `PipelineRun.take` makes exactly one
process the run's follower, and a follower that finds the run's container already there
re-attaches instead of starting another.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from pipelines_app.contract import RetryStrategy
from pipelines_app.gitsync import commit_of
from runs_app import live
from runs_app.environment import build_environment
from runs_app.executors import ExecutorError, Outcome, RunSpec, Watch, get_executor
from runs_app.logs import LogWriter, MetricsWriter, last_timestamps, metrics_path
from runs_app.models import PipelineRun
from runs_app.queue import dispatch
from secrets_app.crypto import DecryptionError

logger = logging.getLogger(__name__)

DEFAULT_RETRY_STRATEGY = RetryStrategy("exponential_backoff")
# A scheduled run that leaves the queue later than this says so in its log.
LATE_AFTER = timedelta(seconds=5)
FailureReason = PipelineRun.FailureReason
Status = PipelineRun.Status


# Told apart from a later process that happens to get the same pid (a restarted container
# hands out the same small pids again): a token fresh for every start of the worker.
WORKER_TOKEN = uuid.uuid4().hex[:8]


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{WORKER_TOKEN}"


def execute_run(run_id: int, orphaned_workers: list[str] | None = None) -> None:
    """The task: follow one run to its end (or do nothing if another process has it)."""
    me = worker_id()
    if not PipelineRun.take(run_id, me, orphaned_workers):
        return
    run = PipelineRun.objects.select_related("pipeline", "schedule").get(pk=run_id)
    try:
        _execute(run)
    finally:
        dispatch()  # a slot is free (or the run could not start): start the next


def _execute(run: PipelineRun) -> None:
    executor = get_executor()
    try:
        environment = build_environment(run)
    except DecryptionError as exc:
        _refuse(run, FailureReason.SECRET, str(exc))
        return
    log = LogWriter(
        Path(run.log_path), mask=_masker(environment.secret_values), publish_as=run.public_id
    )
    metrics = MetricsWriter(metrics_path(run.log_path), publish_as=run.public_id)
    spec = _spec(run, environment.variables)
    watch = Watch(
        should_cancel=run.cancel_is_requested,
        heartbeat=run.beat,
        on_started=lambda handle: PipelineRun.objects.filter(pk=run.pk).update(
            container_id=handle, started_at=timezone.now()
        ),
        on_sample=metrics.sample,
    )
    try:
        state = executor.container_state(run.container_id) if run.container_id else None
        if state == "created":
            # Its worker died between creating and starting the container: start afresh.
            executor.remove(run.container_id)
            run.container_id = ""
        if run.container_id:
            if state is None:
                log.system("the run's container vanished while no worker was following it")
                run.finish(
                    Status.FAILED,
                    failure_reason=FailureReason.LOST,
                    error_message="Its container vanished while no worker was following it.",
                )
                return
            log.system(f"worker {worker_id()} re-attached to the run ({state})")
            outcome = executor.reattach(
                spec, run.container_id, log, watch, last_timestamps(Path(run.log_path))
            )
        else:
            PipelineRun.objects.filter(pk=run.pk).update(
                environment=environment.visible,
                secret_env_names=sorted(environment.secret_names),
                git_commit=commit_of(spec.folder),
            )
            if run.lateness is not None and run.lateness > LATE_AFTER:
                log.system(
                    f"scheduled for {run.scheduled_for.isoformat()}, "
                    f"started {format_delay(run.lateness)} late"
                )
            log.system(
                f"starting {run.pipeline.name} (attempt {run.attempt}) with the "
                f"{executor.name} executor"
            )
            outcome = executor.start(spec, log, watch)
        _record(run, spec, outcome, log)
        run.refresh_from_db()
        if run.is_finished and run.container_id:
            executor.remove(run.container_id)  # only now: exit code and log are stored
    except ExecutorError as exc:
        log.system(str(exc))
        run.finish(Status.FAILED, failure_reason=exc.reason, error_message=str(exc))
    except Exception as exc:
        logger.exception("run %s failed inside Fast-Flow", run.public_id)
        log.system(f"internal error: {type(exc).__name__}: {exc}")
        run.finish(
            Status.FAILED,
            failure_reason=FailureReason.INTERNAL_ERROR,
            error_message=f"Fast-Flow failed while running it: {type(exc).__name__}: {exc}",
        )
    finally:
        run.refresh_from_db()
        schedule_retry(run, log)
        log.close()
        metrics.close()
        shutil.rmtree(spec.run_dir, ignore_errors=True)
        # Only now, with the last line written: viewers close when they see a final status.
        live.status_changed(run.public_id)


def _refuse(run: PipelineRun, reason: str, message: str) -> None:
    """End a run that cannot start at all (no retry: trying again changes nothing)."""
    log = LogWriter(Path(run.log_path), publish_as=run.public_id)
    log.system(f"cannot start: {message}")
    run.finish(Status.FAILED, failure_reason=reason, error_message=message)
    log.close()
    live.status_changed(run.public_id)


def format_delay(delay: timedelta) -> str:
    seconds = delay.total_seconds()
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _spec(run: PipelineRun, environment: dict[str, str]) -> RunSpec:
    config = run.pipeline.spec
    limits = run.run_settings
    timeout = limits.timeout_seconds
    if timeout is None:
        timeout = settings.CONTAINER_TIMEOUT
    return RunSpec(
        run_id=str(run.public_id),
        pipeline=run.pipeline.name,
        # Resolved once: a sync that switches the live checkout meanwhile leaves this run on
        # the tree it started with (pipelines_app.gitsync).
        folder=Path(run.pipeline.folder_path).resolve(),
        entry_point=config.entry_point,
        requirements_file=run.pipeline.requirements_file,
        python_version=config.python_version,
        env=environment,
        cpu_hard_limit=limits.cpu_hard_limit,
        mem_hard_limit_bytes=limits.mem_hard_limit_bytes,
        cpu_soft_limit=limits.cpu_soft_limit,
        mem_soft_limit_bytes=limits.mem_soft_limit_bytes,
        timeout_seconds=timeout or None,
        run_dir=Path(settings.DATA_DIR) / "runs" / str(run.public_id),
    )


def _record(run: PipelineRun, spec: RunSpec, outcome: Outcome, log: LogWriter) -> None:
    """Turn what the executor saw into the run's final, truthful state."""
    fields = {
        "exit_code": outcome.exit_code,
        "uv_version": outcome.uv_version,
        "peak_cpu_percent": outcome.peak_cpu_percent,
        "peak_memory_bytes": outcome.peak_memory_bytes,
        "limit_warnings": outcome.limit_warnings,
        "route": _read_route(spec.run_dir),
    }
    if outcome.started_at and outcome.user_code_started_at:
        fields["setup_duration"] = max(
            outcome.user_code_started_at - outcome.started_at, timedelta(0)
        )
    for warning in outcome.limit_warnings:
        log.system(f"warning: {warning}")

    if outcome.cancelled:
        status, reason, message = Status.CANCELLED, "", "cancelled on request"
    elif outcome.timed_out:
        status, reason = Status.TIMED_OUT, ""
        message = f"killed after its timeout of {spec.timeout_seconds} s"
    elif outcome.oom_killed:
        status, reason = Status.FAILED, FailureReason.OUT_OF_MEMORY
        limit = spec.mem_hard_limit_bytes
        message = "out of memory: killed for using more than its memory limit" + (
            f" ({limit / 1024**2:.0f} MiB)" if limit else ""
        )
    elif outcome.exit_code == 0:
        status, reason, message = Status.SUCCEEDED, "", ""
    elif outcome.user_code_started_at is None:
        status, reason = Status.FAILED, FailureReason.DEPENDENCY_INSTALL
        detail = "\n".join(outcome.last_stderr[-8:]).strip()
        message = "uv could not prepare the run's environment" + (f":\n{detail}" if detail else "")
    else:
        status, reason = Status.FAILED, FailureReason.EXIT_CODE
        message = f"exited with code {outcome.exit_code}"
    log.system(f"finished: {Status(status).label}" + (f" — {message}" if message else ""))
    run.finish(status, failure_reason=reason, error_message=message, **fields)


def _read_route(run_dir: Path) -> str:
    try:
        return (run_dir / "route").read_text(errors="replace").strip()[:200]
    except OSError:
        return ""


def _masker(secret_values: list[str]):
    """Secrets of 4+ characters never reach the log file in plain text."""
    secrets = sorted((s for s in secret_values if len(s) >= 4), key=len, reverse=True)
    if not secrets:
        return None

    def mask(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return mask


def schedule_retry(run: PipelineRun, log: LogWriter) -> PipelineRun | None:
    """A failed run is retried as a new row, due after the strategy's delay."""
    retryable = run.status == Status.FAILED or (
        run.status == Status.TIMED_OUT and settings.RETRY_ON_TIMEOUT
    )
    if not retryable or run.retries.exists():
        return None
    config = run.run_settings
    attempts = config.retry_attempts
    if attempts is None:
        attempts = settings.RETRY_ATTEMPTS
    if run.attempt > attempts:
        return None
    strategy = config.retry_strategy or DEFAULT_RETRY_STRATEGY
    delay = strategy.delay_before_retry(run.attempt)
    try:
        retry = PipelineRun.enqueue(
            run.pipeline,
            trigger=PipelineRun.Trigger.RETRY,
            user=run.triggered_by,
            parameters=run.parameters,
            retry_of=run,
            not_before=timezone.now() + timedelta(seconds=delay),
        )
    except Exception:
        logger.exception("could not queue the retry of run %s", run.public_id)
        return None
    log.system(f"retry {retry.attempt - 1} of {attempts} queued, due in {delay:g} s")
    return retry


def reconcile(executor=None, *, startup: bool = False) -> dict[str, int]:
    """Make every RUNNING run followed by a live worker, and leave no stray container.

    - claimed but never taken (task lost) for a while → sent to a worker again;
    - followed by a worker that stopped heartbeating, or (at start-up) by a dead process of
      this host → sent to a worker again, which re-attaches to its container, finalises it
      from its exit code, or marks it lost when the container is gone;
    - containers of runs that are already final → removed.
    """
    executor = executor or get_executor()
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT)
    orphaned = _dead_local_workers() if startup else []
    counts = {"resent": 0, "removed": 0}
    running = PipelineRun.objects.filter(status=Status.RUNNING)
    lost_task = Q(worker_id="", claimed_at__lt=now - timedelta(seconds=30))
    from django_q.tasks import async_task

    for run in running.filter(lost_task | Q(heartbeat_at__lt=stale) | Q(worker_id__in=orphaned)):
        async_task(
            "runs_app.execution.execute_run", run.pk, orphaned, task_name=f"reattach-{run.pk}"
        )
        counts["resent"] += 1
    try:
        containers = executor.labelled_containers()
    except ExecutorError:
        return counts
    final = PipelineRun.objects.filter(
        public_id__in=list(containers), status__in=PipelineRun.FINAL_STATUSES
    ).values_list("public_id", flat=True)
    for public_id in final:
        executor.remove(containers[str(public_id)])
        counts["removed"] += 1
    return counts


def _dead_local_workers() -> list[str]:
    """Workers of this host recorded on running runs whose process no longer exists."""
    host = socket.gethostname()
    dead = []
    for recorded in (
        PipelineRun.objects.filter(status=Status.RUNNING, worker_id__startswith=f"{host}:")
        .values_list("worker_id", flat=True)
        .distinct()
    ):
        pid = int(recorded.split(":")[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(recorded)
        except PermissionError:
            pass  # alive, another user's
    return dead
