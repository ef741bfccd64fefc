"""Dependency warm-up for real: requirements installed into the shared uv cache inside a
worker container; a warmed pipeline's run links them offline; a cold one warms first; an
impossible pin shows as failed."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import EnvironmentLock, PipelineRun
from runs_app.warmup import dispatch_warmups, request_warmups
from runs_app.worker.warming import warm
from tests.runs_app.conftest import execute, log_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]

# Packages no other test installs, so the cache starts without them.
REQUIREMENT = "iniconfig==2.0.0\n"
COLD_REQUIREMENT = "iniconfig==1.1.1\n"
USES_IT = "import iniconfig\nprint('iniconfig', iniconfig.__name__)\n"


@pytest.mark.fresh  # a cold run warms itself (a pool is made after a warm-up)
def test_a_warmed_pipelines_first_run_installs_nothing_new(make_pipeline):
    make_pipeline("warmed", main=USES_IT, requirements=REQUIREMENT)
    make_pipeline("cold", main=USES_IT, requirements=COLD_REQUIREMENT)
    discover()
    pipeline = Pipeline.objects.get(name="warmed")
    Pipeline.objects.filter(pk=pipeline.pk).update(warm_status=Pipeline.WarmStatus.WARMING)
    warm(pipeline.pk)
    pipeline.refresh_from_db()
    assert pipeline.warm_status == Pipeline.WarmStatus.READY, pipeline.warm_error
    assert pipeline.warmed_hash == pipeline.environment_key
    assert pipeline.warm_duration is not None
    assert pipeline.resolved_requirements == ["iniconfig==2.0.0"]  # for the dependency audit
    warmed_run = execute(PipelineRun.enqueue(pipeline, trigger="manual"))
    cold_run = execute(PipelineRun.enqueue(Pipeline.objects.get(name="cold"), trigger="manual"))
    for run in (warmed_run, cold_run):
        assert run.status == PipelineRun.Status.SUCCEEDED, log_text(run)
        assert "iniconfig iniconfig" in log_text(run)
    # The cold one warms its requirements first (downloads into the shared cache); the
    # warmed one links them from the cache, offline.
    assert "installing its requirements into the shared cache first" in log_text(cold_run)
    assert "Downloaded" in log_text(cold_run) or "Prepared" in log_text(cold_run)
    assert "warm-up" not in log_text(warmed_run)
    assert "Downloaded" not in log_text(warmed_run) and "Prepared" not in log_text(warmed_run)


def test_an_impossible_pin_shows_as_failed_with_the_resolvers_reason(make_pipeline):
    make_pipeline("pinned", requirements="iniconfig==999.0.0\n")
    discover()
    out = io.StringIO()
    with pytest.raises(CommandError, match="warm-up failed for pinned"):
        call_command("warm", "pinned", stdout=out)
    pipeline = Pipeline.objects.get(name="pinned")
    assert pipeline.warm_status == Pipeline.WarmStatus.FAILED
    assert "iniconfig==999.0.0" in pipeline.warm_error, pipeline.warm_error
    assert "iniconfig==999.0.0" in out.getvalue()


def test_only_changed_requirements_are_warmed_a_few_at_a_time(make_pipeline, settings):
    settings.UV_PRE_HEAT = False
    for n in range(4):
        make_pipeline(f"p{n}", requirements=f"iniconfig=={n}.0\n")
    make_pipeline("no_deps")
    discover()
    assert request_warmups() == 4
    statuses = list(Pipeline.objects.order_by("name").values_list("name", "warm_status"))
    warming = [name for name, status in statuses if status == Pipeline.WarmStatus.WARMING]
    pending = [name for name, status in statuses if status == Pipeline.WarmStatus.PENDING]
    assert len(warming) == 2 and len(pending) == 2  # WARMUP_CONCURRENCY
    assert dispatch_warmups() == []  # still two warming: nothing more starts
    Pipeline.objects.filter(name__in=warming).update(
        warm_status=Pipeline.WarmStatus.READY, warmed_hash="x"
    )
    assert len(dispatch_warmups()) == 2
    # Ready with the current requirements (and their lock): nothing to do.
    for pipeline in Pipeline.objects.all():
        pipeline.warm_status = Pipeline.WarmStatus.READY
        pipeline.warmed_hash = pipeline.environment_key
        pipeline.save()
        EnvironmentLock.record(pipeline, pipeline.environment_key, [])
    assert request_warmups() == 0


def test_discovery_marks_changed_requirements_to_warm(make_pipeline, settings):
    settings.UV_PRE_HEAT = True
    make_pipeline("deps", requirements="iniconfig==2.0.0\n")
    make_pipeline("no_deps")
    discover()
    statuses = dict(Pipeline.objects.values_list("name", "warm_status"))
    assert statuses == {"deps": Pipeline.WarmStatus.WARMING, "no_deps": ""}


def test_a_sync_warms_changed_requirements_in_the_worker(settings, tmp_path):
    from runs_app.follow import wait_for
    from tests.pipelines_app.test_gitsync import Remote, synced
    from tests.runs_app.test_worker import Worker

    settings.GIT_REPO_URL = str(tmp_path / "remote.git")
    settings.GIT_BRANCH = "main"
    remote = Remote(tmp_path)
    remote.commit(
        {"deps/main.py": USES_IT, "deps/requirements.txt": "iniconfig==1.0.1\n"}, "needs deps"
    )
    synced()
    deps = Pipeline.objects.get(name="deps")
    assert deps.warm_status == Pipeline.WarmStatus.WARMING  # handed to the worker
    worker = Worker(settings, tmp_path)
    environment = {**worker.environment(), "GIT_REPO_URL": settings.GIT_REPO_URL}
    worker.environment = lambda: environment
    worker.start()
    try:
        warmed = wait_for(
            lambda: Pipeline.objects.get(pk=deps.pk).warm_status == Pipeline.WarmStatus.READY,
            timeout=120,
        )
        assert warmed, (Pipeline.objects.get(pk=deps.pk).warm_error, worker.log.read_text())
        run = PipelineRun.enqueue(deps, trigger="manual")
        assert wait_for(lambda: PipelineRun.objects.get(pk=run.pk).is_finished, timeout=120)
    finally:
        worker.kill()
    run.refresh_from_db()
    assert run.status == PipelineRun.Status.SUCCEEDED, log_text(run)
    assert "warm-up" not in log_text(run)  # the sync's warm-up already did it
