"""Models pipelines in the catalogue: dbt and FastFlowTransform projects are found like any
pipeline, their pipeline.json "models" settings are validated, and a project that cannot
run is a discovery error with its reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.conf import settings

from pipelines_app.contract import parse_config, selection_problem
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.environment import build_environment
from runs_app.models import PipelineRun
from runs_app.run_values import check_parameters

pytestmark = pytest.mark.django_db

SHOP = Path(settings.BASE_DIR) / "examples" / "pipelines" / "shop_models"
FFT_SHOP = Path(settings.BASE_DIR) / "tests" / "runs_app" / "models_projects" / "fft_shop"


def copy_project(pipelines_dir: Path, source: Path, name: str, config: dict | str | None) -> Path:
    """A copy of a models project; config None: without pipeline.json, "keep": its own."""
    folder = pipelines_dir / name
    shutil.copytree(source, folder)
    if config == "keep":
        return folder
    if config is None:
        (folder / "pipeline.json").unlink(missing_ok=True)
    else:
        (folder / "pipeline.json").write_text(json.dumps(config))
    return folder


def errors_of(name: str) -> list[str]:
    return Pipeline.objects.get(name=name).error_messages


def test_a_dbt_project_without_main_py_is_a_models_pipeline(pipelines_dir):
    copy_project(pipelines_dir, SHOP, "shop", None)
    discover()
    pipeline = Pipeline.objects.get(name="shop")
    assert pipeline.status == "ok", pipeline.error_messages
    assert pipeline.entry_type == "models"
    assert pipeline.spec.models.engine == "dbt"
    assert pipeline.spec.models.effective_commands == ("build",)
    assert pipeline.spec.entry_point == "dbt_project.yml"
    assert pipeline.worker_image == settings.WORKER_IMAGE
    assert pipeline.has_requirements


def test_a_fastflowtransform_project_gets_the_newer_python_image(pipelines_dir):
    copy_project(pipelines_dir, FFT_SHOP, "fft", None)
    discover()
    pipeline = Pipeline.objects.get(name="fft")
    assert pipeline.status == "ok", pipeline.error_messages
    assert pipeline.spec.models.engine == "fft"
    assert pipeline.spec.models.effective_commands == ("seed", "run", "test")
    assert pipeline.spec.models.fingerprint_cache is False  # safe unless opted in
    assert pipeline.spec.python_version == "3.13"
    assert pipeline.worker_image == settings.PYTHON_IMAGES["3.13"]


def test_everything_else_pipeline_json_sets_applies_unchanged(pipelines_dir):
    copy_project(
        pipelines_dir,
        SHOP,
        "shop",
        {
            "type": "models",
            "schedule_cron": "0 4 * * *",
            "mem_hard_limit": "1g",
            "retry_attempts": 2,
            "models": {"select": ["stg_orders+", "tag:nightly"], "full_refresh": True},
        },
    )
    discover()
    pipeline = Pipeline.objects.get(name="shop")
    assert pipeline.status == "ok", pipeline.error_messages
    assert pipeline.spec.run.retry_attempts == 2
    assert pipeline.spec.run.mem_hard_limit_bytes == 1024**3
    assert pipeline.schedules.get().cron == "0 4 * * *"
    assert pipeline.spec.models.select == ("stg_orders+", "tag:nightly")
    assert pipeline.spec.models.full_refresh is True


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ({"engine": "spark"}, '\'spark\' must be "dbt" or "fft"'),
        ({"commands": ["build", "rm"]}, "'rm' is not a command Fast-Flow runs"),
        ({"engine": "fft", "commands": ["build"]}, "'build' is not a command"),
        ({"select": "--vars {x: 1}"}, "'--vars' is not a selector"),
        ({"exclude": 3}, "must be a string or a list of strings"),
        ({"target": "prod; rm -rf /"}, "is not a target name"),
        ({"docs": "yes"}, "docs"),
    ],
)
def test_models_settings_are_validated(models, expected):
    result = parse_config({"type": "models", "models": models})
    assert any(
        expected in problem.message or expected in problem.field for problem in result.errors
    ), [(p.field, p.message) for p in result.errors]


def test_selectors_refuse_anything_that_could_be_an_option():
    assert selection_problem("stg_orders+ tag:nightly path:models/staging 2+orders @x a,b") is None
    assert "not a selector" in selection_problem("orders --full-refresh")
    assert "not a selector" in selection_problem("$(touch /tmp/x)")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: (f / "dbt_project.yml").write_text("name: [unclosed\n"), "not valid YAML"),
        (lambda f: (f / "dbt_project.yml").write_text("- a list\n"), "must hold a YAML mapping"),
        (lambda f: (f / "dbt_project.yml").write_text("version: 2\n"), "has no `name:`"),
        (lambda f: (f / "profiles.yml").unlink(), "profiles.yml: is missing"),
        (lambda f: (f / "requirements.txt").unlink(), "requirements.txt: is missing"),
        (
            lambda f: (f / "profiles.yml").write_text(
                "shop:\n  outputs:\n    pg:\n      type: postgres\n      password: hunter22\n"
            ),
            "shop.outputs.pg.password holds a credential written out in the file",
        ),
        (
            lambda f: (f / "profiles.yml").write_text(
                "dev:\n  postgres:\n    dsn: postgresql://app:hunter22@db/shop\n"
            ),
            "dev.postgres.dsn holds a credential",
        ),
    ],
)
def test_a_broken_project_is_a_discovery_error_with_its_reason(pipelines_dir, change, expected):
    folder = copy_project(pipelines_dir, SHOP, "shop", None)
    copy_project(pipelines_dir, SHOP, "healthy", None)
    change(folder)
    scan, _ = discover()
    assert {f.name: f.status for f in scan.folders} == {"healthy": "ok", "shop": "invalid"}
    assert any(expected in message for message in errors_of("shop")), errors_of("shop")
    run_refused = pytest.raises(Exception, match="cannot run until its configuration is fixed")
    with run_refused:
        PipelineRun.enqueue(Pipeline.objects.get(name="shop"), trigger="manual")


def test_commands_are_checked_against_the_engine_found_in_the_folder(pipelines_dir):
    copy_project(
        pipelines_dir, FFT_SHOP, "fft", {"type": "models", "models": {"commands": ["build"]}}
    )
    discover()
    assert (
        "pipeline.json: models.commands 'build' is not a command of fft; use seed, run, test"
        in (errors_of("fft"))
    )


def test_type_models_without_a_project_says_what_is_missing(make_pipeline):
    make_pipeline("empty", main=None, config={"type": "models"})
    discover()
    assert any("needs a dbt project" in m for m in errors_of("empty")), errors_of("empty")


def test_an_engine_that_does_not_match_the_folder_is_an_error(pipelines_dir):
    copy_project(pipelines_dir, SHOP, "shop", {"type": "models", "models": {"engine": "fft"}})
    discover()
    assert any("project.yml is missing" in m for m in errors_of("shop")), errors_of("shop")


def test_a_folder_with_main_py_stays_a_script_even_beside_a_dbt_project(make_pipeline):
    folder = make_pipeline("script", main="print('hi')\n")
    (folder / "dbt_project.yml").write_text("name: x\n")
    discover()
    assert Pipeline.objects.get(name="script").entry_type == "script"


def test_per_run_selection_values_are_checked_like_other_run_values(pipelines_dir, make_pipeline):
    copy_project(pipelines_dir, SHOP, "shop", "keep")
    make_pipeline("plain")
    discover()
    shop, plain = Pipeline.objects.get(name="shop"), Pipeline.objects.get(name="plain")
    fine = {
        "FASTFLOW_SELECT": "stg_orders+",
        "FASTFLOW_EXCLUDE": "",
        "FASTFLOW_FULL_REFRESH": "yes",
    }
    assert check_parameters(shop, fine) == []
    assert check_parameters(shop, {"FASTFLOW_SELECT": "x --vars y"}) == [
        "FASTFLOW_SELECT '--vars' is not a selector: use model names, tag:..., path:..., +name, "
        "name+ (letters, digits and _ . : + @ * ? , / = [ ] -, not first a dash)"
    ]
    assert check_parameters(shop, {"FASTFLOW_FULL_REFRESH": "maybe"}) == [
        "FASTFLOW_FULL_REFRESH must be true or false, not 'maybe'"
    ]
    assert check_parameters(plain, {"FASTFLOW_SELECT": "x"}) == [
        "FASTFLOW_SELECT is for models pipelines; plain is not one"
    ]
    assert "reserved" in check_parameters(shop, {"FASTFLOW_MODELS": "{}"})[0]
    run = PipelineRun.enqueue(shop, trigger="manual", parameters={"FASTFLOW_SELECT": "stg_orders"})
    variables = build_environment(run).variables
    assert json.loads(variables["FASTFLOW_MODELS"])["commands"] == ["build"]
    assert json.loads(variables["FASTFLOW_MODELS"])["exclude"] == ["tag:known_bad"]
    assert variables["FASTFLOW_SELECT"] == "stg_orders"
