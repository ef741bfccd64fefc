"""A run's effective limits in one place (runs_app.limits): pipeline.json within the
instance's caps, the instance's defaults where it sets none — stored on the run when it is
made and shown the same on the pipeline page, the run page, the live chart's message, the
API, and given to its container."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from fastflow_site.models import ApiToken
from pipelines_app.contract import RunSettings
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.limits import effective_limits
from runs_app.models import PipelineRun
from runs_app.worker.execution import run_spec

pytestmark = pytest.mark.django_db
GIB = 1024**3


@pytest.fixture
def instance_caps(settings):
    settings.RUN_CPU_LIMIT, settings.RUN_MEMORY_LIMIT = 2.0, 4 * GIB
    settings.CONTAINER_TIMEOUT = 3600


@pytest.mark.usefixtures("instance_caps")
def test_the_instance_decides_where_pipeline_json_is_silent():
    limits = effective_limits(RunSettings())
    assert (limits.cpu_hard, limits.mem_hard_bytes, limits.timeout_seconds) == (2.0, 4 * GIB, 3600)
    assert (limits.cpu_hard_from, limits.mem_hard_from, limits.timeout_from) == (
        "RUN_CPU_LIMIT", "RUN_MEMORY_LIMIT", "CONTAINER_TIMEOUT"
    )  # fmt: skip
    assert limits.notes == ()


@pytest.mark.usefixtures("instance_caps")
def test_pipeline_json_within_the_caps_and_above_them():
    within = effective_limits(RunSettings(cpu_hard_limit=1.5, mem_hard_limit_bytes=GIB))
    assert (within.cpu_hard, within.mem_hard_bytes, within.cpu_hard_from) == (
        1.5, GIB, "pipeline.json"
    )  # fmt: skip
    above = effective_limits(RunSettings(cpu_hard_limit=8, mem_hard_limit_bytes=16 * GIB))
    assert (above.cpu_hard, above.mem_hard_bytes) == (2.0, 4 * GIB)
    assert above.notes == (
        "mem_hard_limit 16 GiB is above this instance's RUN_MEMORY_LIMIT: the run gets 4 GiB",
        "cpu_hard_limit 8 cores is above this instance's RUN_CPU_LIMIT: the run gets 2 cores",
    )


def test_no_cap_and_no_timeout(settings):
    settings.RUN_CPU_LIMIT, settings.RUN_MEMORY_LIMIT, settings.CONTAINER_TIMEOUT = 0, 0, None
    limits = effective_limits(RunSettings(cpu_hard_limit=3, timeout_seconds=0))
    assert (limits.cpu_hard, limits.mem_hard_bytes, limits.timeout_seconds) == (3, None, None)


@pytest.mark.usefixtures("instance_caps")
def test_every_place_shows_what_the_container_gets(make_pipeline, settings, tmp_path, viewer):
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0
    make_pipeline("capped", config={"mem_hard_limit": "1g", "cpu_soft_limit": 0.5})
    discover()
    pipeline = Pipeline.objects.get(name="capped")
    run = PipelineRun.start(pipeline)
    settings.RUN_CPU_LIMIT = 1.0  # changed after the run was made: the run keeps its own
    run.refresh_from_db()
    assert run.limits["cpu_hard"] == 2.0 and run.limits["mem_hard_bytes"] == GIB
    spec, _ = run_spec(run, {})
    assert (spec.cpu_hard_limit, spec.mem_hard_limit_bytes, spec.timeout_seconds) == (
        2.0, GIB, 3600
    )  # fmt: skip
    _, token = ApiToken.make(viewer, "limits", ApiToken.Scope.READ)
    api = Client(headers={"Authorization": f"Bearer {token}"})
    answer = api.get(f"/api/v1/runs/{run.public_id}").json()["limits"]
    assert (answer["cpu_hard"], answer["mem_hard_bytes"], answer["cpu_soft"]) == (2.0, GIB, 0.5)
    assert api.get("/api/v1/pipelines/capped").json()["limits"]["cpu_hard"] == 1.0  # next run
    api.force_login(viewer)
    run_page = api.get(run.get_absolute_url()).content.decode()
    assert '<dd class="limit-cpu">2 cores' in run_page and "1 GiB" in run_page
    page = api.get(reverse("pipelines_app:detail", args=["capped"])).content.decode()
    assert '<dd class="limit-cpu">1 core ' in page and "warns above 0.5 cores" in page
