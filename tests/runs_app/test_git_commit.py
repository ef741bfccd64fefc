"""A run from a synced repository records the commit it ran."""

from __future__ import annotations

import pytest

from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun
from tests.pipelines_app.test_gitsync import Remote, synced
from tests.runs_app.conftest import execute, log_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]


@pytest.mark.parametrize("executor", ["local", "docker"], indirect=True)
def test_a_run_records_the_commit_it_ran(settings, tmp_path):
    settings.GIT_REPO_URL = str(tmp_path / "remote.git")
    settings.GIT_BRANCH = "main"
    remote = Remote(tmp_path)
    head = remote.commit({"a/main.py": "print('from git')\n"}, "deployable")
    synced()
    run = execute(PipelineRun.enqueue(Pipeline.objects.get(name="a"), trigger="manual"))
    assert run.status == PipelineRun.Status.SUCCEEDED, log_text(run)
    assert run.git_commit == head
    assert "from git" in log_text(run)
