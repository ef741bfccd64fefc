"""Dependency warm-up: a pipeline's requirements installed once into the shared uv cache,
inside a worker container, with no secret in its environment and none of the pipeline's
code but what its requirements name.

Runs see the shared cache read-only (runs_app.executors.layout): their environment is
linked from it, offline. So the cache must hold a pipeline's packages before it runs:

- pipelines whose environment changed are warmed as worker tasks (`warm`), handed out by
  runs_app.warmup;
- a run whose environment is not warmed yet warms it first, in its own follower
  (`ensure_warm`), its output in the run's log.

A warm-up runs prepare.sh with FASTFLOW_WARM_ONLY: exactly the install a run does, but
allowed to download and to write the cache, and stopping before any pipeline code.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone
from django_q.tasks import async_task

from pipelines_app.models import Pipeline
from runs_app import notify
from runs_app.environment import IndexCredentialsError, index_credentials
from runs_app.executors import (
    EngineUnavailable,
    Executor,
    ExecutorError,
    LeaseLost,
    RunSpec,
    Watch,
    get_executor,
)
from runs_app.install_failures import explain_install_failure
from runs_app.logs import LogWriter
from runs_app.models import EnvironmentLock, NodeWarmth
from runs_app.warmup import Warm, dispatch_warmups, needs_warming
from runs_app.worker.code import code_folder
from secrets_app.crypto import DecryptionError
from secrets_app.masking import Masker

logger = logging.getLogger(__name__)

WARMUP_TIMEOUT_SECONDS = 900


def warm(pipeline_id: int) -> None:
    """The worker's task: warm one pipeline claimed by dispatch_warmups (or the command)."""
    pipeline = Pipeline.objects.get(pk=pipeline_id)
    path = Path(settings.DATA_DIR) / "warmups" / f"{pipeline.name}.log"
    path.unlink(missing_ok=True)  # the newest warm-up's output, for a look when it fails
    log = LogWriter(path)
    try:
        executor = get_executor(pipeline.executor[0])
        _warm_and_record(pipeline, executor, log, Watch())
    finally:
        log.close()
    dispatch_warmups()


def ensure_warm(pipeline: Pipeline, executor: Executor, log: LogWriter, watch: Watch) -> str:
    """Before a run: its environment in the shared cache. Returns "" when ready, or the
    reason it cannot be (the warm-up's error). A run never waits for a warm-up handed to
    another process (that one may not even have started): it warms here, and uv keeps two
    concurrent installs of the same packages apart. Raises ExecutorError (image_missing)
    when the run's image is not there."""
    pipeline.refresh_from_db()
    if needs_warming(pipeline):
        # A missing image fails the run as such (ExecutorError), not as a failed install.
        executor.check_image(pipeline.worker_image)
        log.system("installing its requirements into the shared cache first (warm-up)")
        Pipeline.objects.filter(pk=pipeline.pk).update(warm_status=Warm.WARMING)
        _warm_and_record(pipeline, executor, log, watch)
        pipeline.refresh_from_db()
        if needs_warming(pipeline):
            return pipeline.warm_error or "the warm-up did not finish"
    return ensure_warm_here(pipeline, executor, log, watch)


def ensure_warm_here(pipeline: Pipeline, executor: Executor, log: LogWriter, watch: Watch) -> str:
    """The lock a run installs, in this node's own cache: installed now (and said in the
    run's log) when another node made it. "" when ready, else why it is not."""
    lock = EnvironmentLock.current(pipeline)
    if lock is None or not lock.packages or NodeWarmth.holds(lock, settings.WORKER_NAME):
        return ""
    executor.check_image(pipeline.worker_image)
    log.system(
        f"this worker node ({settings.WORKER_NAME}) does not hold its packages yet: installing "
        f"lock {lock.short_hash} ({len(lock.packages)} packages) into its cache first"
    )
    try:
        ok, detail, _ = _install(pipeline, executor, log, watch, lock=lock.text)
    except (EngineUnavailable, LeaseLost):
        raise
    except Exception as problem:
        logger.exception("warming lock %s on this node failed inside Fast-Flow", lock.short_hash)
        ok, detail = False, f"{type(problem).__name__}: {problem}"
    if not ok:
        return f"its packages could not be installed on this node: {detail}"
    NodeWarmth.record(lock, settings.WORKER_NAME)
    return ""


def _warm_and_record(pipeline: Pipeline, executor: Executor, log: LogWriter, watch: Watch) -> None:
    """Install and store the result for the environment that was installed."""
    key = pipeline.environment_key
    began = time.monotonic()
    try:
        ok, detail, resolved = _install(pipeline, executor, log, watch)
    except (EngineUnavailable, LeaseLost):
        Pipeline.objects.filter(pk=pipeline.pk, warm_status=Warm.WARMING).update(
            warm_status=Warm.PENDING
        )
        raise
    except Exception as problem:  # the warm-up must end in a state a person can read
        logger.exception("warm-up of %s failed inside Fast-Flow", pipeline.name)
        ok, detail, resolved = False, f"{type(problem).__name__}: {problem}", []
    fields = {
        "warmed_at": timezone.now(),
        "warm_duration": timedelta(seconds=time.monotonic() - began),
    }
    if ok:
        fields.update(
            warm_status=Warm.READY, warmed_hash=key, warm_error="", resolved_requirements=resolved
        )
    else:
        fields.update(warm_status=Warm.FAILED, warm_error=detail)
    rows = Pipeline.objects.filter(pk=pipeline.pk)
    if ok:
        lock = EnvironmentLock.record(pipeline, key, resolved)
        NodeWarmth.record(lock, settings.WORKER_NAME)  # this node's cache holds it
    if not rows.filter(requirements_hash=pipeline.requirements_hash).update(**fields):
        # The requirements changed meanwhile: the new ones are warmed next.
        rows.filter(warm_status=Warm.WARMING).update(warm_status=Warm.PENDING)
    elif ok:
        notify.warmup_succeeded(pipeline)
        if settings.DEPENDENCY_AUDIT:  # by the worker, not in this run's way
            async_task("runs_app.worker.vulnerabilities.check_pipeline", pipeline.pk, group="audit")
    else:
        notify.warmup_failed(pipeline, detail)


def _install(
    pipeline: Pipeline, executor: Executor, log: LogWriter, watch: Watch, lock: str = ""
) -> tuple[bool, str, list[str]]:
    """Whether it worked, why not, and what got installed ("name==version"). With `lock`
    (a lock another node made): exactly those packages, into this node's cache."""
    try:
        netrc, secret_values = index_credentials(pipeline)
    except (IndexCredentialsError, DecryptionError) as problem:
        return False, str(problem), []
    warm_id = str(uuid.uuid4())
    spec = RunSpec(
        run_id=warm_id,
        pipeline=pipeline.name,
        folder=(
            code_folder(pipeline.bundle_id)
            if pipeline.bundle_id is not None
            else Path(pipeline.folder_path).resolve()
        ),
        entry_point=pipeline.spec.entry_point,
        requirements_file=pipeline.requirements_file,
        python_version=pipeline.spec.python_version,
        image=pipeline.worker_image,
        env={},  # no secrets, no parameters: nothing but the install
        timeout_seconds=WARMUP_TIMEOUT_SECONDS,
        mem_hard_limit_bytes=settings.RUN_MEMORY_LIMIT,
        cpu_hard_limit=settings.RUN_CPU_LIMIT,
        run_dir=Path(settings.DATA_DIR) / "warmups" / warm_id,
        purpose="warm",
        extras=pipeline.spec.environment.extras,
        groups=pipeline.spec.environment.groups,
        netrc=netrc,
        index_options=tuple(pipeline.index_options),
        lock=lock,
        placement=tuple(pipeline.spec.placement),
    )
    handles: list[str] = []
    install_watch = Watch(
        should_cancel=watch.should_cancel,
        heartbeat=watch.heartbeat,
        on_started=handles.append,
    )
    # The index passwords are masked wherever the warm-up's output goes (its log, a run's).
    unmasked, index_mask = log.mask, Masker(secret_values)
    log.mask = lambda text: index_mask(unmasked(text))
    try:
        outcome = executor.start(spec, log, install_watch)
    except EngineUnavailable:
        raise
    except ExecutorError as problem:
        return False, str(problem), []
    finally:
        log.mask = unmasked
        _remove_all(executor, handles)
        shutil.rmtree(spec.run_dir, ignore_errors=True)
    if outcome.exit_code == 0 and not outcome.cancelled:
        return True, "", outcome.resolved
    if outcome.cancelled:
        return False, "the warm-up was stopped", []
    detail = "\n".join(outcome.last_stderr[-12:]).strip()
    explained = explain_install_failure(log.tail(), pipeline)
    return (
        False,
        "\n".join(part for part in (explained, detail) if part)
        or (f"exit code {outcome.exit_code}"),
        [],
    )


def _remove_all(executor: Executor, handles: list[str]) -> None:
    for handle in handles:
        try:
            executor.remove(handle)
        except EngineUnavailable:
            logger.warning("warm-up container %s left behind: the engine is gone", handle)


def warm_all_now(pipelines: list[Pipeline], report: Callable[[Pipeline], None]) -> None:
    """`manage.py warm`: each pipeline warmed in this process, one after another."""
    for pipeline in pipelines:
        Pipeline.objects.filter(pk=pipeline.pk).update(warm_status=Warm.WARMING)
        warm(pipeline.pk)
        pipeline.refresh_from_db()
        report(pipeline)
