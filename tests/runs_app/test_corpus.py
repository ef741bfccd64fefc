"""Pipelines as they are found in public repositories (tests/runs_app/corpus/): each folder
discovered, warmed and run unchanged in a real container — plain and pinned requirements,
pip-compile output, hashes, a uv project, a pyproject without a lock, PEP 723, a notebook,
a dbt project with its own pins, numpy/pandas/duckdb wheels, a requirements.txt.lock,
includes, markers, .python-version, a package published only as source."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun, RunStep
from runs_app.worker.warming import warm
from tests.runs_app.conftest import execute, log_text, output_lines, require

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]

CORPUS = Path(__file__).parent / "corpus"
SHAPES = sorted(folder.name for folder in CORPUS.iterdir() if folder.is_dir())


@pytest.mark.parametrize("shape", SHAPES)
def test_a_pipeline_as_found_runs_unchanged(shape, pipelines_dir, docker_engine):
    if (CORPUS / shape / ".python-version").exists():
        image = settings.PYTHON_IMAGES["3.13"]
        try:
            docker_engine.images.get(image)
        except Exception:
            require(False, f"the worker image {image}")
    shutil.copytree(CORPUS / shape, pipelines_dir / shape)
    discover()
    pipeline = Pipeline.objects.get(name=shape)
    assert pipeline.is_valid, pipeline.error_messages
    assert not pipeline.warning_messages or shape == "pyproject_unlocked", pipeline.warning_messages
    warm(pipeline.pk)
    pipeline.refresh_from_db()
    assert pipeline.warm_status == Pipeline.WarmStatus.READY, pipeline.warm_error
    run = execute(PipelineRun.enqueue(pipeline, trigger="manual"))
    assert run.status == PipelineRun.Status.SUCCEEDED, log_text(run)
    assert run.environment_lock is not None
    if pipeline.spec.type == "models":
        step = RunStep.objects.get(run=run, name="answer")
        assert step.status == RunStep.Status.SUCCESS
    else:
        assert any(line.startswith("corpus ok") for line in output_lines(run)), log_text(run)
