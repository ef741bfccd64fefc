"""A failed warm-up in plain words, from uv's own output (as it prints it)."""

from __future__ import annotations

import pytest

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.install_failures import explain_install_failure

pytestmark = pytest.mark.django_db
CROSS = "  \u00d7"  # how uv marks an error


@pytest.fixture
def pipeline(make_pipeline):
    make_pipeline("etl", requirements="psycopg2==2.9.9\n")
    discover()
    return Pipeline.objects.get(name="etl")


@pytest.mark.parametrize(
    ("output", "starts"),
    [
        (
            [f"{CROSS} Failed to build `psycopg2==2.9.9`", "pg_config executable not found."],
            "psycopg2==2.9.9 is built from source here and needs a compiler",
        ),
        (
            [f"{CROSS} Failed to build `fastnum==1.0`", "error: command 'gcc' failed"],
            "fastnum==1.0 is built from source here",
        ),
        (
            ["error: Failed to fetch: `https://pypi.internal.example/simple/etl/`",
             "  Caused by: dns error: failed to lookup address information"],
            "The package index https://pypi.internal.example/simple/etl/ could not be reached",
        ),
        (
            ["error: Failed to fetch: `https://pypi.internal.example/simple/etl/`",
             "  Caused by: HTTP status client error (401 Unauthorized)"],
            "The package index https://pypi.internal.example/simple/etl/ refused the warm-up",
        ),
        (
            ["error: The lockfile at `uv.lock` needs to be updated, but `--check` was provided."],
            "uv.lock does not match pyproject.toml",
        ),
        ([f"{CROSS} Failed to download and build `demo @ git+https://git.example/demo`",
          "  ╰─▶ Git operation failed"], "A git requirement could not be fetched"),
        (["error: No solution found when resolving dependencies"], ""),
    ],
)  # fmt: skip
def test_common_causes_are_named(pipeline, output, starts):
    explained = explain_install_failure(output, pipeline)
    assert explained.startswith(starts) if starts else explained == ""
