"""Where discovery takes a pipeline's environment from, as people really declare it — uv
projects, inline script metadata, requirements with includes — its Python, and the
mistakes it reports before any run (docs/environments.md)."""

from __future__ import annotations

import pytest

from pipelines_app.discovery import discover, scan_pipelines

pytestmark = pytest.mark.django_db

PYPROJECT = """[project]
name = "etl"
version = "0.1.0"
requires-python = "{python}"
dependencies = ["iniconfig<2.1"]

[project.optional-dependencies]
s3 = ["six"]

[dependency-groups]
dev = ["pytest"]
"""
SCRIPT = """# /// script
# requires-python = "{python}"
# dependencies = [
#   "iniconfig",
# ]
# ///
import iniconfig
"""


def report_of(pipelines_dir, name: str):
    scan = scan_pipelines(pipelines_dir)
    return next(folder for folder in scan.folders if folder.name == name)


def messages(report, kind: str = "errors") -> list[str]:
    return [problem.message for problem in getattr(report, kind)]


def test_the_documented_order_decides_and_says_what_it_ignores(make_pipeline, pipelines_dir):
    folder = make_pipeline("all", main=SCRIPT.format(python=">=3.11"), requirements="six\n")
    (folder / "pyproject.toml").write_text(PYPROJECT.format(python=">=3.11"))
    (folder / "uv.lock").write_text("version = 1\n")
    report = report_of(pipelines_dir, "all")
    assert report.status == "ok", messages(report)
    assert report.requirements_file == "uv.lock"
    assert report.requirements_text == "iniconfig<2.1"
    ignored = " ".join(messages(report, "warnings"))
    assert "requirements.txt is ignored" in ignored
    assert "the inline script metadata of main.py is ignored" in ignored
    (folder / "uv.lock").unlink()
    report = report_of(pipelines_dir, "all")
    assert report.requirements_file == "pyproject.toml"
    assert any("has no uv.lock" in m for m in messages(report, "warnings"))
    (folder / "pyproject.toml").unlink()
    assert report_of(pipelines_dir, "all").requirements_file == "main.py"
    (folder / "main.py").write_text("print('plain')\n")
    assert report_of(pipelines_dir, "all").requirements_file == "requirements.txt"


def test_a_pyproject_for_tools_only_is_no_environment(make_pipeline, pipelines_dir):
    folder = make_pipeline("tools", requirements="six\n")
    (folder / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    assert report_of(pipelines_dir, "tools").requirements_file == "requirements.txt"


def test_everything_that_makes_the_environment_is_in_its_hash(make_pipeline, pipelines_dir):
    folder = make_pipeline("hashed", requirements="-r base.txt\n-c constraints.txt\n")
    (folder / "base.txt").write_text("six\n")
    (folder / "constraints.txt").write_text("six<2\n")
    first = report_of(pipelines_dir, "hashed").requirements_hash
    (folder / "constraints.txt").write_text("six<1.17\n")
    assert report_of(pipelines_dir, "hashed").requirements_hash != first


def test_an_include_outside_the_folder_is_an_error(make_pipeline, pipelines_dir):
    make_pipeline("escapes", requirements="-r ../other/requirements.txt\n")
    report = report_of(pipelines_dir, "escapes")
    assert report.status == "invalid"
    assert "is outside the pipeline's folder" in messages(report)[0]


def test_a_missing_include_is_an_error(make_pipeline, pipelines_dir):
    make_pipeline("missing", requirements="--requirement=base.txt\n")
    report = report_of(pipelines_dir, "missing")
    assert report.status == "invalid", messages(report)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({".python-version": "3.13\n"}, "3.13"),
        ({".python-version": "3.11.2\n"}, None),  # the worker image's own
        ({"pyproject.toml": PYPROJECT.format(python=">=3.12")}, "3.13"),
        ({"pyproject.toml": PYPROJECT.format(python=">=3.10")}, None),
        ({"main.py": SCRIPT.format(python=">=3.12,<3.14")}, "3.13"),
    ],
)
def test_the_python_comes_from_where_people_write_it(make_pipeline, pipelines_dir, files, expected):
    folder = make_pipeline("versioned")
    for name, content in files.items():
        (folder / name).write_text(content)
    report = report_of(pipelines_dir, "versioned")
    assert report.status == "ok", messages(report)
    assert report.config.python_version == expected


@pytest.mark.parametrize(
    ("config", "files", "error"),
    [
        (
            {"python_version": "3.11"},
            {".python-version": "3.13\n"},
            "pipeline.json python_version asks for 3.11, .python-version for 3.13",
        ),
        (
            {"python_version": "3.11"},
            {"pyproject.toml": PYPROJECT.format(python=">=3.12")},
            "its requires-python is >=3.12, but pipeline.json python_version asks for 3.11",
        ),
        ({}, {"pyproject.toml": PYPROJECT.format(python=">=3.15")}, "fits no worker image"),
        ({}, {".python-version": "latest\n"}, "'latest' is not a Python version"),
        ({}, {"pyproject.toml": "[project\nname=1"}, "is not valid TOML"),
        ({}, {"uv.lock": "version = 1\n"}, "has no pyproject.toml beside it"),
    ],
)
def test_conflicts_and_mistakes_are_errors_before_any_run(
    make_pipeline, pipelines_dir, config, files, error
):
    folder = make_pipeline("wrong", config=config)
    for name, content in files.items():
        (folder / name).write_text(content)
    report = report_of(pipelines_dir, "wrong")
    assert report.status == "invalid"
    assert any(error in message for message in messages(report)), messages(report)


def test_extras_and_groups_are_for_uv_projects(make_pipeline, pipelines_dir):
    make_pipeline("plain", config={"environment": {"extras": ["s3"]}}, requirements="six\n")
    warnings = messages(report_of(pipelines_dir, "plain"), "warnings")
    assert any("apply to uv projects" in message for message in warnings)


def test_a_models_project_may_bring_its_dependencies_in_pyproject(make_pipeline, pipelines_dir):
    folder = make_pipeline("shop", main=None)
    (folder / "dbt_project.yml").write_text("name: shop\nprofile: shop\n")
    (folder / "profiles.yml").write_text(
        "shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
    )
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "shop"\nversion = "1"\ndependencies = ["dbt-duckdb<1.11"]\n'
    )
    report = report_of(pipelines_dir, "shop")
    assert report.status == "ok", messages(report)
    assert report.requirements_file == "pyproject.toml"


def test_the_pipeline_page_says_where_the_environment_comes_from(make_pipeline, viewer_client):
    make_pipeline("scripted", main=SCRIPT.format(python=">=3.11"))
    discover()
    page = viewer_client.get("/pipelines/scripted/").content.decode()
    assert "inline script metadata in main.py (PEP 723)" in page
