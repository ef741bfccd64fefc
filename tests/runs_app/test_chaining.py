"""Chaining (`downstream_triggers`): a run's final outcome starts the runs its triggers name,
exactly once — on success, failure (a timeout counts), an exact route — never after a
cancel or a failed attempt that is retried; loops stop at CHAIN_DEPTH_LIMIT; triggers to a
missing, invalid or disabled pipeline are recorded as skipped, with the reason."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from pipelines_app.contract.types import DownstreamTrigger
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import ChainLink, PipelineRun
from runs_app.models.chaining import chain_condition, chain_refusal
from tests.runs_app.conftest import execute, log_text, output_lines

Status = PipelineRun.Status


def held(name: str, **fields) -> PipelineRun:
    """A run of `name` taken by a (pretend) worker: this test ends it by hand."""
    run = PipelineRun.objects.create(pipeline=Pipeline.objects.get(name=name), **fields)
    PipelineRun.objects.filter(pk=run.pk).update(status=Status.CLAIMED)
    return PipelineRun.take(run.pk, "host:1:t")


@pytest.fixture
def chains(make_pipeline, settings):
    settings.MAX_CONCURRENT_RUNS = 0  # started runs stay queued: these tests look at them
    make_pipeline(
        "upstream",
        config={
            "downstream_triggers": [
                {"pipeline": "on_ok"},
                {"pipeline": "on_bad", "on_success": False, "on_failure": True},
                {"pipeline": "full_load", "on_route": "full"},
                {"pipeline": "configured", "run_config_id": "prod"},
            ]
        },
    )
    for name in ("on_ok", "on_bad", "full_load"):
        make_pipeline(name)
    make_pipeline("configured", config={"schedules": [{"id": "prod", "timeout": 77}]})
    discover()


def started(run: PipelineRun) -> dict[str, str]:
    return {
        link.target_name: link.condition
        for link in run.chain_links.all()
        if link.downstream_id is not None
    }


@pytest.mark.django_db
@pytest.mark.usefixtures("chains")
def test_a_success_starts_the_success_triggers_with_their_run_config():
    run = held("upstream")
    assert run.finish(Status.SUCCEEDED, exit_code=0)
    assert started(run) == {"on_ok": "success", "configured": "success"}
    configured = run.chain_links.get(target_name="configured").downstream
    assert configured.trigger == PipelineRun.Trigger.CHAIN
    assert configured.config_id == "prod"  # the run config's overrides apply
    assert configured.run_settings.timeout_seconds == 77
    assert configured.started_by == run
    assert configured.chain_depth == 1


@pytest.mark.django_db
@pytest.mark.usefixtures("chains")
def test_a_route_fires_only_on_exactly_its_value():
    other = held("upstream", route="partial")
    other.finish(Status.SUCCEEDED, exit_code=0)
    assert "full_load" not in started(other)
    full = held("upstream", route="full")
    full.finish(Status.SUCCEEDED, exit_code=0)
    assert started(full)["full_load"] == "route 'full'"


@pytest.mark.django_db
@pytest.mark.usefixtures("chains")
@pytest.mark.parametrize(
    ("status", "condition"),
    [(Status.FAILED, "failure"), (Status.TIMED_OUT, "failure (timed out)")],
)
def test_a_failure_or_a_timeout_starts_the_failure_triggers(status, condition):
    run = held("upstream")
    run.finish(status, exit_code=1)
    assert started(run) == {"on_bad": condition}


@pytest.mark.django_db
@pytest.mark.usefixtures("chains")
def test_a_cancelled_run_starts_nothing():
    run = held("upstream")
    run.request_cancel()
    run.finish(Status.SUCCEEDED, exit_code=0)  # the cancel request wins
    assert run.status == Status.CANCELLED
    assert not run.chain_links.exists()


@pytest.mark.django_db
def test_a_failed_attempt_that_is_retried_starts_nothing_yet(make_pipeline, settings):
    settings.MAX_CONCURRENT_RUNS = 0
    make_pipeline(
        "flaky",
        config={
            "retry_attempts": 1,
            "downstream_triggers": [{"pipeline": "cleanup", "on_failure": True}],
        },
    )
    make_pipeline("cleanup")
    discover()
    first = held("flaky")
    first.finish(Status.FAILED, exit_code=1, failure_reason="exit_code")
    assert not first.chain_links.exists()  # a retry follows: not its final outcome
    retry = first.retries.get()
    PipelineRun.objects.filter(pk=retry.pk).update(status=Status.CLAIMED)
    retry = PipelineRun.take(retry.pk, "host:1:t")
    retry.finish(Status.FAILED, exit_code=1, failure_reason="exit_code")
    assert started(retry) == {"cleanup": "failure"}  # after the last attempt


@pytest.mark.django_db
def test_missing_invalid_and_disabled_targets_are_skipped_with_the_reason(make_pipeline, settings):
    settings.MAX_CONCURRENT_RUNS = 0
    make_pipeline(
        "source",
        config={
            "downstream_triggers": [
                {"pipeline": "nowhere"},
                {"pipeline": "broken"},
                {"pipeline": "off"},
            ]
        },
    )
    make_pipeline("broken", config={"timeout": "x"})
    make_pipeline("off", config={"enabled": False})
    discover()
    run = held("source")
    run.finish(Status.SUCCEEDED, exit_code=0)
    reasons = {link.target_name: link.skipped_reason for link in run.chain_links.all()}
    assert reasons == {
        "nowhere": "no such pipeline (its folder is gone, or was never there)",
        "broken": "its pipeline.json has errors",
        "off": "it is disabled",
    }
    assert PipelineRun.objects.count() == 1  # nothing started


@pytest.mark.django_db
def test_a_loop_stops_at_the_depth_limit(make_pipeline, settings):
    settings.MAX_CONCURRENT_RUNS = 0
    settings.CHAIN_DEPTH_LIMIT = 3
    make_pipeline("ping", config={"downstream_triggers": [{"pipeline": "pong"}]})
    make_pipeline("pong", config={"downstream_triggers": [{"pipeline": "ping"}]})
    discover()
    run = held("ping")
    depth = 0
    while True:
        run.finish(Status.SUCCEEDED, exit_code=0)
        link = run.chain_links.get()
        if link.downstream is None:
            break
        depth += 1
        PipelineRun.objects.filter(pk=link.downstream.pk).update(status=Status.CLAIMED)
        run = PipelineRun.take(link.downstream.pk, "host:1:t")
    assert depth == 3
    assert "past CHAIN_DEPTH_LIMIT (3): a loop?" in link.skipped_reason


@pytest.mark.django_db
@pytest.mark.usefixtures("chains")
def test_a_trigger_fires_once_whatever_two_workers_do():
    run = held("upstream")
    assert run.finish(Status.SUCCEEDED, exit_code=0)
    rival = PipelineRun.objects.get(pk=run.pk)
    assert not rival.finish(Status.SUCCEEDED, exit_code=0)  # the run is final already
    assert run.chain_links.count() == 2
    with pytest.raises(IntegrityError), transaction.atomic():
        ChainLink.objects.create(
            upstream=run, trigger_index=0, target_name="on_ok", condition="success"
        )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
def test_a_real_chain_on_the_engine(make_pipeline, admin_client):
    """Upstream writes its route in a container; the routed downstream runs, and the pages
    link both ways."""
    make_pipeline(
        "extract",
        main="import os\nopen(os.environ['FASTFLOW_ROUTE_FILE'], 'w').write('full')\n",
        config={
            "downstream_triggers": [
                {"pipeline": "load_full", "on_route": "full"},
                {"pipeline": "load_delta", "on_route": "delta"},
            ]
        },
    )
    make_pipeline("load_full", main="print('loading everything')\n")
    make_pipeline("load_delta", main="print('loading changes')\n")
    discover()
    upstream = execute(PipelineRun.enqueue(Pipeline.objects.get(name="extract"), trigger="api"))
    assert upstream.status == Status.SUCCEEDED, log_text(upstream)
    (link,) = upstream.chain_links.all()
    downstream = execute(link.downstream)
    assert downstream.status == Status.SUCCEEDED
    assert output_lines(downstream) == ["loading everything"]
    upstream_page = admin_client.get(upstream.get_absolute_url()).content.decode()
    assert downstream.get_absolute_url() in upstream_page
    downstream_page = admin_client.get(downstream.get_absolute_url()).content.decode()
    assert 'id="started-by"' in downstream_page
    assert upstream.get_absolute_url() in downstream_page


@pytest.mark.django_db
@pytest.mark.usefixtures("chains")
def test_the_graph_pages_draw_the_chains(admin_client):
    page = admin_client.get("/graph/").content.decode()
    assert page.count('class="graph-node"') == 5
    assert "route &#x27;full&#x27;" in page and "success · config prod" in page
    around = admin_client.get("/pipelines/on_ok/").content.decode()
    assert 'id="chains"' in around and 'data-node="upstream"' in around
    run = held("upstream")
    run.finish(Status.SUCCEEDED, exit_code=0)
    run_page = admin_client.get(run.get_absolute_url()).content.decode()
    assert 'id="run-chain"' in run_page
    assert run_page.count('class="graph-node"') == 3  # the run and the two it started


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
def test_on_the_engine_a_failure_chains_after_its_last_retry_and_a_cancel_never(
    make_pipeline,
):
    make_pipeline(
        "fragile",
        main="import sys, time\nprint('working', flush=True)\ntime.sleep(2)\nsys.exit(4)\n",
        config={
            "retry_attempts": 1,
            "retry_strategy": {"type": "fixed_delay", "delay": 0},
            "downstream_triggers": [{"pipeline": "alert", "on_success": False, "on_failure": True}],
        },
    )
    make_pipeline("alert", main="print('alerting')\n")
    discover()
    first = execute(PipelineRun.enqueue(Pipeline.objects.get(name="fragile"), trigger="api"))
    assert first.status == Status.FAILED and not first.chain_links.exists()  # a retry follows
    retry = execute(first.retries.get())
    assert retry.status == Status.FAILED
    (link,) = retry.chain_links.all()
    assert link.condition == "failure"
    assert output_lines(execute(link.downstream)) == ["alerting"]
    # A cancelled run starts nothing, though on_failure is set.
    cancelled = PipelineRun.enqueue(Pipeline.objects.get(name="fragile"), trigger="api")
    cancelled.request_cancel()
    cancelled.refresh_from_db()
    assert cancelled.status == Status.CANCELLED and not cancelled.chain_links.exists()


# --- the rules, without a database ------------------------------------------------------------

ON_SUCCESS = DownstreamTrigger("next")
ON_FAILURE = DownstreamTrigger("next", on_success=False, on_failure=True)
ON_BOTH = DownstreamTrigger("next", on_failure=True)
ON_ROUTE = DownstreamTrigger("next", on_route="big")


@pytest.mark.parametrize(
    ("trigger", "status", "route", "condition"),
    [
        (ON_SUCCESS, Status.SUCCEEDED, "", "success"),
        (ON_SUCCESS, Status.FAILED, "", None),
        (ON_FAILURE, Status.SUCCEEDED, "", None),
        (ON_FAILURE, Status.FAILED, "", "failure"),
        (ON_FAILURE, Status.TIMED_OUT, "", "failure (timed out)"),
        (ON_BOTH, Status.FAILED, "", "failure"),
        (ON_BOTH, Status.CANCELLED, "", None),  # a cancel fires nothing
        (ON_FAILURE, Status.CANCELLED, "", None),
        (ON_ROUTE, Status.SUCCEEDED, "big", "route 'big'"),
        (ON_ROUTE, Status.SUCCEEDED, "small", None),
        (ON_ROUTE, Status.SUCCEEDED, "", None),
        (ON_ROUTE, Status.FAILED, "big", None),  # a route is a success's
    ],
)
def test_when_a_trigger_fires(trigger, status, route, condition):
    assert chain_condition(trigger, status, route) == condition


def target(**fields) -> Pipeline:
    return Pipeline(name="next", **{"state": Pipeline.State.PRESENT, "enabled": True, **fields})


@pytest.mark.parametrize(
    ("pipeline", "depth", "refusal"),
    [
        (target(), 1, ""),
        (None, 1, "no such pipeline (its folder is gone, or was never there)"),
        (target(state=Pipeline.State.MISSING), 1, "no such pipeline"),
        (target(config_errors=["bad"]), 1, "its pipeline.json has errors"),
        (target(enabled=False), 1, "it is disabled"),
        (target(), 4, ""),
        (target(), 5, "the chain is 5 runs long, past CHAIN_DEPTH_LIMIT (4): a loop?"),
    ],
)
def test_what_a_trigger_may_not_start(settings, pipeline, depth, refusal):
    settings.CHAIN_DEPTH_LIMIT = 4
    found = chain_refusal(pipeline, depth)
    assert found.startswith(refusal) and bool(found) == bool(refusal)
