"""manage.py discover: the table people read over SSH, and --strict for CI of pipeline repos."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from pipelines_app.models import Pipeline

pytestmark = pytest.mark.django_db


def run_discover(*args: str) -> str:
    out = StringIO()
    call_command("discover", *args, stdout=out, no_color=True)
    return out.getvalue()


def test_prints_a_table_with_every_folder(example_pipelines):
    (example_pipelines / "docs").mkdir()
    output = run_discover()
    lines = output.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ENTRY", "POINT", "REQUIREMENTS", "PROBLEMS"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:] if not line.startswith(" ")}
    assert rows["hello_world"] == ["ok", "main.py", "-"]
    assert rows["with_requirements"] == ["ok", "main.py", "requirements.txt"]
    assert rows["broken_config"][:3] == ["invalid", "main.py", "-"]
    assert rows["docs"] == ["ignored", "-", "-"]
    assert rows["shop_models"] == ["ok", "dbt_project.yml", "requirements.txt"]
    assert (
        "    ✖ pipeline.json: mem_hard_limit '1.5x' is not a size; use e.g. 512m, 1.5g, 2Gi"
        in lines
    )
    assert (
        "    ⚠ pipeline.json: retries is not a pipeline.json field; did you mean 'retry_attempts'?"
        in lines
    )
    assert any(line.startswith("    · docs has no main.py") for line in lines)
    assert (
        "8 pipeline(s)" in lines[-1] and "7 ok, 1 invalid" in lines[-1] and "1 ignored" in lines[-1]
    )
    assert Pipeline.objects.count() == 8


def test_strict_fails_on_the_examples_naming_the_broken_pipeline(example_pipelines):
    with pytest.raises(CommandError, match="1 folder\\(s\\) need fixing: broken_config"):
        run_discover("--strict")
    # The catalogue was still updated: --strict reports, it does not refuse to discover.
    assert Pipeline.objects.get(name="broken_config").status == "invalid"


def test_strict_passes_on_valid_pipelines(make_pipeline):
    make_pipeline("one", config={"timeout": 10})
    make_pipeline("two")
    output = run_discover("--strict")
    assert "2 pipeline(s)" in output and "2 ok, 0 invalid" in output


def test_strict_fails_on_a_rejected_folder(make_pipeline):
    make_pipeline("bad name")
    with pytest.raises(CommandError, match="bad name"):
        run_discover("--strict")


def test_dry_run_with_path_leaves_the_database_alone(example_pipelines, tmp_path):
    output = run_discover("--dry-run", "--path", str(example_pipelines))
    assert "dry run: database not changed" in output
    assert Pipeline.objects.count() == 0


def test_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="does not exist; create it or point PIPELINES_DIR"):
        run_discover("--path", str(tmp_path / "nope"))


def test_exit_status_through_manage_py(example_pipelines, tmp_path):
    """The real process: what the CI of a pipeline repository sees."""
    import os
    import shutil
    import subprocess
    import sys

    from django.conf import settings

    env = {**os.environ, "DATA_DIR": str(tmp_path / "data")}
    env.pop("DATABASE_URL", None)
    command = [
        sys.executable,
        str(settings.BASE_DIR / "manage.py"),
        "discover",
        "--strict",
        "--dry-run",
        "--path",
        str(example_pipelines),
    ]
    strict = subprocess.run(command, env=env, capture_output=True, text=True)
    assert strict.returncode == 1
    assert "need fixing: broken_config" in strict.stderr
    assert "mem_hard_limit '1.5x' is not a size" in strict.stdout

    shutil.rmtree(example_pipelines / "broken_config")
    ok = subprocess.run(command, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "7 ok, 0 invalid" in ok.stdout
