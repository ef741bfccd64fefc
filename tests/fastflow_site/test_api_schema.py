"""The JSON API against its own served OpenAPI description, with schemathesis — every
check, the stateful phase included, bounded examples and a fixed seed — on a real web
process and the demo pipelines: every answer it gives is described, every request the
description allows is taken, every request it excludes is refused, every schema is valid."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastflow_site.models import ApiToken
from pipelines_app.discovery import discover
from tests.runs_app.test_worker import Worker, kill_group, start_web_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SEED = "20261206"
EXAMPLES_PER_OPERATION = "30"


def test_the_api_keeps_to_its_description(example_pipelines, settings, tmp_path, operator):
    settings.DATA_DIR, settings.LOGS_DIR = tmp_path / "data", tmp_path / "logs"
    discover()  # no worker: the runs it starts stay queued, and it may cancel them
    _, token = ApiToken.make(operator, "schemathesis", ApiToken.Scope.RUN)
    web, base = start_web_server(Worker(settings, tmp_path).environment(), tmp_path / "web.log")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/api/v1/openapi.json",
             "--header", f"Authorization: Bearer {token}",
             "--checks", "all", "--phases", "coverage,fuzzing,stateful",
             "--seed", SEED, "--max-examples", EXAMPLES_PER_OPERATION,
             "--generation-database", "none", "--no-color", "--request-timeout", "30"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
    finally:
        kill_group(web)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout, report
