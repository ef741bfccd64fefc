"""What a models run reports is not trusted: steps and artifacts are checked, capped and
masked before they are stored, and the docs a run made are served sandboxed."""

from __future__ import annotations

import base64
import json

import pytest

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app import steps as steps_module
from runs_app.artifacts import ArtifactWriter, artifact_content
from runs_app.models import PipelineRun, RunStep
from runs_app.steps import StepRecorder, failure_summary
from tests.runs_app.conftest import log_text, run_log
from tests.runs_app.models_support import DBT_SHOP, copy_project

pytestmark = pytest.mark.django_db(transaction=True)
Step = RunStep.Status


@pytest.fixture
def run(pipelines_dir, settings, tmp_path) -> PipelineRun:
    settings.LOGS_DIR = tmp_path / "logs"
    copy_project(pipelines_dir, DBT_SHOP, "shop")
    discover()
    return PipelineRun.enqueue(Pipeline.objects.get(name="shop"), trigger="manual")


def record(run: PipelineRun, *reports: dict, mask=lambda text: text) -> list[RunStep]:
    recorder = StepRecorder(run, mask)
    for report in reports:
        recorder.report(report)
    recorder.close()
    recorder.conclude()
    return list(run.steps.all())


def test_reports_become_one_row_per_node_updated_in_place(run):
    model = {"id": "model.shop.orders", "name": "orders", "type": "model"}
    (step,) = record(
        run,
        {**model, "status": "started", "started_at": "2026-11-30T10:00:00Z"},
        {**model, "status": "success", "finished_at": "2026-11-30T10:00:02.5Z"},
        {**model, "status": "started"},  # a late event never undoes an outcome
        {**model, "rows": 12, "seconds": 2.5, "depends_on": ["seed.shop.raw"]},
    )
    assert (step.status, step.rows, step.took, step.depends_on) == (
        Step.SUCCESS, 12, 2.5, ["seed.shop.raw"]
    )  # fmt: skip


def test_nonsense_is_ignored_and_texts_are_cut_and_masked(run):
    steps = record(
        run,
        {"id": "x", "type": "rm -rf", "status": "success"},  # not a kind of step
        {"type": "model", "status": "success"},  # no id
        {"id": "model.a", "type": "model", "status": "exploded"},  # unknown status: kept running
        {"id": "model.b", "type": "model", "name": "b" * 1000, "rows": "many", "seconds": True},
        {"id": "test.c", "type": "test", "status": "fail", "message": "password hunter22 leaked"},
        mask=lambda text: text.replace("hunter22", "***"),
    )
    by_id = {step.node_id: step for step in steps}
    assert set(by_id) == {"model.a", "model.b", "test.c"}
    assert by_id["model.a"].status == Step.NOT_RUN  # never finished: not run at the end
    assert len(by_id["model.b"].name) == 300 and by_id["model.b"].rows is None
    assert by_id["model.b"].seconds is None
    assert by_id["test.c"].message == "password *** leaked"


def test_a_run_cannot_make_more_steps_than_the_cap(run, monkeypatch):
    monkeypatch.setattr(steps_module, "MAX_STEPS", 5)
    steps = record(run, *({"id": f"model.m{i}", "type": "model"} for i in range(50)))
    assert len(steps) == 5


def test_a_failure_names_the_test_its_column_and_what_it_skipped(run):
    record(
        run,
        {"id": "model.shop.orders", "type": "model", "name": "orders", "status": "success"},
        {"id": "test.shop.nn", "type": "test", "name": "not_null_orders_customer", "status": "fail",
         "message": "Got 1 result, configured to fail if != 0\nmore", "failures": 1,
         "model": "orders", "column": "customer", "depends_on": ["model.shop.orders"]},
        {"id": "model.shop.revenue", "type": "model", "name": "revenue", "status": "skipped",
         "depends_on": ["model.shop.orders"]},
        {"id": "model.shop.report", "type": "model", "name": "report", "status": "skipped",
         "depends_on": ["model.shop.revenue"]},
    )  # fmt: skip
    assert failure_summary(run) == (
        "test not_null_orders_customer on orders.customer failed "
        "(Got 1 result, configured to fail if != 0); 2 skipped because of it"
    )
    skipped = RunStep.objects.filter(run=run, status=Step.SKIPPED)
    assert {s.message for s in skipped} == {
        "skipped: test not_null_orders_customer failed upstream"
    }


def piece(name: str, data: bytes, at: int, size: int) -> dict:
    return {"name": name, "size": size, "at": at, "data": base64.b64encode(data).decode()}


def test_artifacts_are_written_piece_by_piece_and_shown_only_when_whole(run, settings):
    log = run_log(run)
    writer = ArtifactWriter(run, log)
    body = b"<html>" + b"x" * 20 + b"</html>"
    writer.write(piece("docs.html", body[:10], 0, len(body)))
    assert artifact_content(run, "docs.html") is None  # half a file is never served
    writer.write(piece("docs.html", body[:10], 0, len(body)))  # read twice: same bytes
    writer.write(piece("docs.html", body[10:], 10, len(body)))
    assert artifact_content(run, "docs.html") == body
    writer.write(piece("../../etc/passwd", b"x", 0, 1))
    writer.write(piece("dag.json", b"[]", 5, 6))  # does not fit the size it announced
    writer.write({"name": "dag.json", "size": 2, "at": 0, "data": "!!not base64"})
    writer.write(piece("dag.json", b"", 0, 10**12))  # larger than the cap
    log.close()
    assert artifact_content(run, "dag.json") is None
    assert artifact_content(run, "../../etc/passwd") is None
    assert not list(settings.LOGS_DIR.rglob("passwd"))  # nothing written outside, either
    text = log_text(run)
    assert "artifact '../../etc/passwd' ignored: not an artifact Fast-Flow keeps" in text
    assert "artifact 'dag.json' ignored: a piece does not fit the size it announced" in text


def test_the_docs_page_is_served_sandboxed_and_only_to_people_who_may_read(
    run, client, viewer, stranger
):
    log = run_log(run)
    ArtifactWriter(run, log).write(piece("docs.html", b"<p>docs</p>", 0, 11))
    log.close()
    client.force_login(viewer)
    assert client.get("/pipelines/shop/docs/").status_code == 404  # no succeeded run yet
    PipelineRun.objects.filter(pk=run.pk).update(status=PipelineRun.Status.SUCCEEDED)
    response = client.get("/pipelines/shop/docs/")
    assert response.status_code == 200
    assert response.content == b"<p>docs</p>"
    policy = response["Content-Security-Policy"]
    assert policy.startswith("sandbox allow-scripts") and "allow-same-origin" not in policy
    assert "default-src 'none'" in policy
    client.force_login(stranger)
    assert client.get("/pipelines/shop/docs/").status_code == 403


def test_the_graph_keeps_each_models_last_status(run, client, viewer):
    log = run_log(run)
    graph = [
        {"id": "seed.shop.raw", "name": "raw", "type": "seed", "depends_on": []},
        {"id": "model.shop.orders", "name": "orders", "type": "model",
         "depends_on": ["seed.shop.raw"]},
    ]  # fmt: skip
    data = json.dumps(graph).encode()
    ArtifactWriter(run, log).write(piece("dag.json", data, 0, len(data)))
    log.close()
    record(run, {"id": "model.shop.orders", "type": "model", "status": "error"})
    client.force_login(viewer)
    html = client.get("/pipelines/shop/").content.decode()
    assert 'data-node="model.shop.orders"' in html and "run-error" in html
    assert 'data-edge="seed.shop.raw model.shop.orders"' in html
