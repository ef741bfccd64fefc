"""Models pipelines run for real: dbt (DuckDB and PostgreSQL) and FastFlowTransform (DuckDB
and PostgreSQL) projects in real run containers, each model, seed and test a stored step,
a failing data test failing the run by name, the model graph and the generated docs kept."""

from __future__ import annotations

import json
import os

import pytest

from pipelines_app.models import Pipeline
from runs_app.artifacts import artifact_content
from runs_app.models import PipelineRun, RunStep
from runs_app.steps import docs_run, model_graph
from tests.runs_app.conftest import log_text
from tests.runs_app.models_support import (
    DBT_SHOP,
    FFT_SHOP,
    copy_project,
    newer_python_image_fixture,  # noqa: F401 (a fixture)
    run_database_fixture,  # noqa: F401 (a fixture)
    run_models,
    steps_by_name,
    store_variable,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]
Status = PipelineRun.Status
Step = RunStep.Status

DBT_POSTGRES = "dbt-core>=1.10,<1.12\ndbt-postgres>=1.9,<1.12\n"
FFT_POSTGRES = "fastflowtransform[postgres]==0.6.19\nclick\n"


@pytest.mark.parametrize("executor", ["docker", "sandbox"], indirect=True)
def test_a_dbt_duckdb_project_runs_model_by_model(pipelines_dir, settings):
    copy_project(pipelines_dir, DBT_SHOP, "shop")
    run = run_models("shop")
    assert run.status == Status.SUCCEEDED, log_text(run)
    steps = steps_by_name(run)
    kinds = {name: step.kind for name, step in steps.items()}
    assert [n for n, k in kinds.items() if k == "seed"] == ["raw_customers", "raw_orders"]
    assert {n for n, k in kinds.items() if k == "model"} == {
        "stg_customers", "stg_orders", "customer_revenue", "big_orders"  # big_orders: Python
    }  # fmt: skip
    assert sum(k == "test" for k in kinds.values()) == 6  # the known_bad one is excluded
    assert all(s.status in (Step.SUCCESS, Step.PASS) for s in steps.values())
    assert (steps["raw_customers"].rows, steps["raw_orders"].rows) == (3, 5)
    assert all(s.started_at and s.finished_at and s.seconds is not None for s in steps.values())
    unique = steps["unique_customer_revenue_customer_id"]
    assert (unique.tested_model, unique.tested_column) == ("customer_revenue", "customer_id")
    assert steps["customer_revenue"].depends_on == [
        "model.shop.stg_customers",
        "model.shop.stg_orders",
    ]
    # Its DuckDB file lives in the pipeline's own data folder, kept for the next run.
    assert (Pipeline.objects.get(name="shop").data_folder / "shop.duckdb").is_file()
    docs = artifact_content(run, "docs.html")
    assert docs is not None and b"customer_revenue" in docs

    # The same pipeline with the failing test let in for one run (a run value).
    failed = run_models("shop", FASTFLOW_EXCLUDE="")
    assert failed.status == Status.FAILED
    assert failed.exit_code == 1
    assert failed.failure_reason == PipelineRun.FailureReason.STEP_FAILED
    assert "test not_null_stg_orders_customer_id on stg_orders.customer_id failed" in (
        failed.error_message
    )
    assert "Got 1 result, configured to fail if != 0" in failed.error_message
    steps = steps_by_name(failed)
    assert steps["not_null_stg_orders_customer_id"].status == Step.FAIL
    assert steps["not_null_stg_orders_customer_id"].failures == 1
    skipped = [s for s in steps.values() if s.status == Step.SKIPPED]
    assert {s.name for s in skipped} >= {"big_orders", "customer_revenue"}
    assert all(
        s.message == "skipped: test not_null_stg_orders_customer_id failed upstream"
        for s in skipped
    ), [s.message for s in skipped]
    # The pipeline's graph: each model's last status; docs still from the succeeded run.
    graph = model_graph(Pipeline.objects.get(name="shop"))
    assert graph.nodes["model.shop.big_orders"].status == Step.SKIPPED
    assert graph.nodes["seed.shop.raw_orders"].status == Step.SUCCESS
    assert ("model.shop.stg_orders", "model.shop.big_orders") in {
        (e.source, e.target) for e in graph.edges
    }
    assert docs_run(Pipeline.objects.get(name="shop")) == run


def test_a_dbt_postgres_project_gets_its_connection_from_secrets(
    pipelines_dir, run_database, settings
):
    copy_project(
        pipelines_dir,
        DBT_SHOP,
        "shop_pg",
        config={
            "type": "models",
            "models": {"target": "postgres", "docs": False, "exclude": "tag:known_bad"},
        },
        requirements=DBT_POSTGRES,
        without=("models/big_orders.py",),  # dbt-postgres runs no Python models
    )
    password = "pg-password-" + os.urandom(4).hex()
    store_variable("shop_pg", "PG_PASSWORD", password, secret=True)
    for name, value in (
        ("PG_HOST", run_database.host),
        ("PG_PORT", str(run_database.port)),
        ("PG_DATABASE", run_database.name),
    ):
        store_variable("shop_pg", name, value, secret=False)
    run = run_models("shop_pg")
    assert run.status == Status.SUCCEEDED, log_text(run)
    steps = steps_by_name(run)
    assert (steps["raw_customers"].rows, steps["raw_orders"].rows) == (3, 5)
    assert steps["customer_revenue"].status == Step.SUCCESS
    assert steps["customer_revenue"].rows == 3  # dbt-postgres tells rows affected ("SELECT 3")
    assert steps["unique_stg_orders_order_id"].status == Step.PASS
    assert password not in log_text(run)
    assert "PG_PASSWORD" in run.secret_env_names and "PG_PASSWORD" not in run.environment
    with run_database.connect() as connection:
        revenue = connection.execute(
            "select name, revenue from analytics.customer_revenue order by customer_id"
        ).fetchall()
    assert [(name, float(total)) for name, total in revenue] == [
        ("Ada", 42.5), ("Grace", 8.75), ("Linus", 42.0)
    ]  # fmt: skip


@pytest.mark.usefixtures("newer_python_image")
def test_a_fastflowtransform_duckdb_project_runs_in_the_newer_python_image(pipelines_dir):
    copy_project(pipelines_dir, FFT_SHOP, "fft_shop")
    run = run_models("fft_shop")
    assert run.status == Status.SUCCEEDED, log_text(run)
    assert "fft run" in log_text(run) and "--cache off" in log_text(run)  # no reuse by default
    steps = steps_by_name(run)
    assert {(s.kind, s.name, s.rows) for s in steps.values() if s.kind != "test"} == {
        ("seed", "raw_customers", 3),
        ("seed", "raw_orders", 5),
        ("model", "customers.ff", 3),
        ("model", "orders.ff", 4),
        ("model", "customer_revenue.ff", 3),
        ("model", "big_orders", 2),  # a Python model
    }
    tests = [s for s in run.steps.all() if s.kind == "test"]
    assert {(s.name, s.tested, s.status) for s in tests} == {
        ("not_null", "orders.order_id", Step.PASS),
        ("unique", "customers.customer_id", Step.PASS),
        ("not_null", "orders.customer_id", Step.PASS),
    }
    assert json.loads(artifact_content(run, "dag.json"))
    assert b"<script" in artifact_content(run, "docs.html")

    # Changed input data (a run value the model reads) makes a data test fail: exit code 2.
    failed = run_models("fft_shop", SHOP_KEEP_ORPHANS="1")
    assert failed.status == Status.FAILED and failed.exit_code == 2
    assert failed.failure_reason == PipelineRun.FailureReason.STEP_FAILED
    assert "test not_null on orders.customer_id failed" in failed.error_message
    assert "has 1 NULL-values" in failed.error_message


@pytest.mark.usefixtures("newer_python_image")
def test_a_fastflowtransform_postgres_project(pipelines_dir, run_database):
    copy_project(
        pipelines_dir,
        FFT_SHOP,
        "fft_pg",
        config={"type": "models", "models": {"target": "pg", "docs": False}},
        requirements=FFT_POSTGRES,
    )
    dsn = (
        f"postgresql://postgres:unused@{run_database.host}:{run_database.port}/{run_database.name}"
    )
    store_variable("fft_pg", "FF_PG_DSN", dsn, secret=True)
    run = run_models("fft_pg")
    assert run.status == Status.SUCCEEDED, log_text(run)
    steps = steps_by_name(run)
    assert steps["customer_revenue.ff"].status == Step.SUCCESS
    assert steps["raw_orders"].rows == 5
    assert dsn not in log_text(run)
    with run_database.connect() as connection:
        count = connection.execute("select count(*) from fft_shop.customer_revenue").fetchone()
    assert count == (3,)


def test_a_python_version_without_its_image_fails_saying_how_to_build_it(make_pipeline, settings):
    settings.PYTHON_IMAGES = {"3.13": "fastflow-worker:not-built"}
    make_pipeline("newer", main="print('hi')\n", config={"python_version": "3.13"})
    run = run_models("newer")
    assert run.status == Status.FAILED
    assert run.failure_reason == PipelineRun.FailureReason.IMAGE_MISSING
    assert "fastflow-worker:not-built is not on this machine" in run.error_message
    assert "SUITE=trixie bash runs_app/worker_image/build-offline.sh" in run.error_message
