"""Pipelines' environments as people declare them, in real containers (fresh and pooled):
what a warm-up resolves becomes a lock that every run installs exactly, offline, from the
read-only shared cache — wheels built from source included — and records."""

from __future__ import annotations

import pytest

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import EnvironmentLock, PipelineRun
from runs_app.warmup import warm
from tests.runs_app.conftest import execute, log_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]
Status = PipelineRun.Status

# Published only as a source archive (dbt-core 1.7 depends on it): uv must build it.
SOURCE_ONLY = "minimal-snowplow-tracker==0.0.2\n"
USES_SOURCE_ONLY = "import snowplow_tracker\nprint('tracker', snowplow_tracker.__name__)\n"


def warmed(name: str) -> Pipeline:
    pipeline = Pipeline.objects.get(name=name)
    Pipeline.objects.filter(pk=pipeline.pk).update(warm_status=Pipeline.WarmStatus.WARMING)
    warm(pipeline.pk)
    pipeline.refresh_from_db()
    assert pipeline.warm_status == Pipeline.WarmStatus.READY, pipeline.warm_error
    return pipeline


@pytest.fixture(params=["fresh", "pooled"])
def containers(request):
    if request.param == "pooled":
        request.getfixturevalue("pooled")
    return request.param


def test_a_source_only_package_is_built_once_and_runs_offline(make_pipeline, containers):
    make_pipeline("tracker", main=USES_SOURCE_ONLY, requirements=SOURCE_ONLY)
    discover()
    pipeline = warmed("tracker")
    run = execute(PipelineRun.enqueue(pipeline, trigger="manual"))
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert "tracker snowplow_tracker" in log_text(run)
    assert "Building" not in log_text(run) and "Built" not in log_text(run)


def test_every_run_installs_and_records_its_warm_ups_lock(make_pipeline, containers, viewer_client):
    make_pipeline("unpinned", main="import iniconfig\nprint('ok')\n", requirements="iniconfig\n")
    discover()
    pipeline = warmed("unpinned")
    lock = EnvironmentLock.current(pipeline)
    assert lock is not None and len(lock.packages) == 1
    assert lock.packages[0].startswith("iniconfig==")
    runs = [execute(PipelineRun.enqueue(pipeline, trigger="manual")) for _ in range(2)]
    for run in runs:
        assert run.status == Status.SUCCEEDED, log_text(run)
        assert run.environment_lock == lock  # the identical environment, recorded
        assert f"environment: 1 package(s), lock {lock.short_hash}" in log_text(run)
    # Shown on the run's page and in the API.
    page = viewer_client.get(runs[0].get_absolute_url()).content.decode()
    assert lock.short_hash in page and lock.packages[0] in page
    answer = viewer_client.get(f"/api/v1/runs/{runs[0].public_id}").json()
    assert answer["environment"] == {"lock": lock.sha256, "packages": lock.packages}
