"""Dependency warm-up: after a sync, each pipeline whose requirements changed has them
installed once into the shared uv cache, inside a worker container (the executor the runs
use, so interpreter and platform match), with no secret in its environment.

`request_warmups()` marks pipelines pending; `dispatch_warmups()` starts at most
WARMUP_CONCURRENCY at once as worker tasks (claimed with a conditional UPDATE, like runs),
so warm-ups never take the workers runs need. A warm-up runs the pipeline's own
`uv run --with-requirements …` with an entry point that does nothing: exactly the install
a run would do, so the cache holds what the next run needs (a resolver-only
`uv pip compile` would not download the wheels).
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from pipelines_app.models import Pipeline

logger = logging.getLogger(__name__)

WARMUP_CONCURRENCY = 2
WARMUP_TIMEOUT_SECONDS = 900


def request_warmups(names: list[str] | None = None, *, force: bool = False) -> int:
    """Mark pipelines to warm: those whose requirements changed (all named ones if force)."""
    candidates = Pipeline.objects.filter(
        state=Pipeline.State.PRESENT, has_requirements=True, config_errors=[]
    ).exclude(warm_status__in=[Pipeline.WarmStatus.PENDING, Pipeline.WarmStatus.WARMING])
    if names is not None:
        candidates = candidates.filter(name__in=names)
    if not force:
        candidates = candidates.exclude(warmed_hash=F("requirements_hash"))
    marked = candidates.update(warm_status=Pipeline.WarmStatus.PENDING, warm_error="")
    if marked:
        dispatch_warmups()
    return marked


def requeue_interrupted_warmups() -> int:
    """At a worker's start: warm-ups of a worker that died are started again."""
    return Pipeline.objects.filter(warm_status=Pipeline.WarmStatus.WARMING).update(
        warm_status=Pipeline.WarmStatus.PENDING
    )


def dispatch_warmups() -> list[int]:
    """Start pending warm-ups while fewer than WARMUP_CONCURRENCY are warming."""
    from django_q.tasks import async_task

    started = []
    warming = Pipeline.objects.filter(warm_status=Pipeline.WarmStatus.WARMING).count()
    pending = Pipeline.objects.filter(warm_status=Pipeline.WarmStatus.PENDING).order_by("pk")
    for pk in pending.values_list("pk", flat=True)[: max(0, WARMUP_CONCURRENCY - warming)]:
        took = Pipeline.objects.filter(pk=pk, warm_status=Pipeline.WarmStatus.PENDING).update(
            warm_status=Pipeline.WarmStatus.WARMING
        )
        if took:
            async_task("pipelines_app.warmup.warm", pk, group="warmup")
            started.append(pk)
    return started


def warm(pipeline_id: int) -> None:
    """The worker's task: install one pipeline's requirements into the shared cache."""
    pipeline = Pipeline.objects.get(pk=pipeline_id)
    try:
        ok, detail, seconds = _install(pipeline)
    except Exception as problem:  # the warm-up must end in a state a person can read
        logger.exception("warm-up of %s failed inside Fast-Flow", pipeline.name)
        ok, detail, seconds = False, f"{type(problem).__name__}: {problem}", 0.0
    fields = {"warmed_at": timezone.now(), "warm_duration": timedelta(seconds=seconds)}
    if ok:
        fields.update(
            warm_status=Pipeline.WarmStatus.READY,
            warmed_hash=pipeline.requirements_hash,
            warm_error="",
        )
    else:
        fields.update(warm_status=Pipeline.WarmStatus.FAILED, warm_error=detail)
    # Only if the requirements did not change meanwhile (then it is pending again).
    Pipeline.objects.filter(Q(warm_status=Pipeline.WarmStatus.WARMING), pk=pipeline.pk).update(
        **fields
    )
    dispatch_warmups()


def _install(pipeline: Pipeline) -> tuple[bool, str, float]:
    from runs_app.executors import ExecutorError, RunSpec, Watch, get_executor
    from runs_app.logs import LogWriter

    executor = get_executor()
    warm_id = str(uuid.uuid4())
    work = Path(settings.DATA_DIR) / "warmups" / warm_id
    folder = work / "pipeline"
    # A copy of the folder (requirements may include other files) with an entry point
    # that does nothing: only the environment is built.
    shutil.copytree(pipeline.folder_path, folder, symlinks=True)
    (folder / "main.py").write_text("pass\n")
    spec = RunSpec(
        run_id=warm_id,
        pipeline=pipeline.name,
        folder=folder,
        entry_point="main.py",
        requirements_file=pipeline.requirements_file,
        python_version=pipeline.spec.python_version,
        env={},  # no secrets, no parameters: nothing but the install
        timeout_seconds=WARMUP_TIMEOUT_SECONDS,
        run_dir=work / "run",
    )
    log = LogWriter(work / "warmup.log")
    handles: list[str] = []
    began = time.monotonic()
    try:
        outcome = executor.start(spec, log, Watch(on_started=handles.append))
    except ExecutorError as problem:
        return False, str(problem), time.monotonic() - began
    finally:
        log.close()
        for handle in handles:
            executor.remove(handle)
    seconds = time.monotonic() - began
    if outcome.exit_code == 0:
        shutil.rmtree(work, ignore_errors=True)
        return True, "", seconds
    detail = "\n".join(outcome.last_stderr[-12:]).strip() or f"exit code {outcome.exit_code}"
    shutil.rmtree(work, ignore_errors=True)
    return False, detail, seconds
