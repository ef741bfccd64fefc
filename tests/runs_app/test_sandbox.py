"""The sandbox executor on this machine's kernel: what a sandboxed run is given and what it
is refused (the hostile pipelines every isolating executor meets are in test_hostile.py)."""

from __future__ import annotations

import pytest

from runs_app.models import PipelineRun
from tests.runs_app.conftest import log_text, output_lines, run_now

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]
sandbox = pytest.mark.parametrize("executor", ["sandbox"], indirect=True)
Status = PipelineRun.Status


@sandbox
def test_a_sandboxed_run_prints_and_succeeds(make_pipeline):
    run = run_now(make_pipeline, "hello", "import os\nprint('hello', os.getuid())\n")
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert output_lines(run) == ["hello 10001"]
