"""Models pipelines in a real headless Chromium: a dbt and a FastFlowTransform project run
by a real worker, their steps on the run page while they come in, the model graph and the
generated docs on the pipeline page, and the run form's selection."""

from __future__ import annotations

import pytest

from tests.runs_app.models_support import (
    DBT_SHOP,
    FFT_SHOP,
    copy_project,
    newer_python_image_fixture,  # noqa: F401 (a fixture)
)
from tests.runs_app.test_browser import (  # noqa: F401 (instance: a fixture)
    instance,
    log_in,
    start_run,
)
from tests.runs_app.test_daily_view_browser import serious_violations

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]
MINUTE = 60_000


@pytest.fixture
def models_instance(request, pipelines_dir):
    """An instance (web and worker processes) whose pipelines include both projects."""
    copy_project(pipelines_dir, DBT_SHOP, "shop")
    if getattr(request, "param", "") == "with fft":
        request.getfixturevalue("newer_python_image")
        copy_project(pipelines_dir, FFT_SHOP, "fft_shop")
    return request.getfixturevalue("instance")


def run_from_form(page, base: str, pipeline: str, **fields: str) -> None:
    """Open the pipeline page's "Run with parameters", fill it in, submit; on the run page."""
    page.goto(f"{base}/pipelines/{pipeline}/")
    page.click("#run-with-parameters >> xpath=.. >> summary")
    for selector, value in fields.items():
        page.fill(selector, value)
    page.click("#run-with-parameters button[type=submit]")
    page.wait_for_url(f"{base}/runs/**")


def steps_of_page(page) -> dict[str, str]:
    rows = page.locator("#steps tr[data-node]")
    return {
        rows.nth(i).get_attribute("data-node"): rows.nth(i).get_attribute("data-status")
        for i in range(rows.count())
    }


def test_a_dbt_models_run_step_by_step_with_its_graph_and_docs(models_instance, browser):
    base = models_instance
    page = browser.new_page()
    log_in(page, base)
    page.goto(f"{base}/pipelines/shop/")
    assert "models: dbt project" in page.inner_text("main")
    assert "The project's docs appear here after a succeeded run." in page.inner_text("#models")
    page.click("main form button[type=submit]")  # ▶ Run
    page.wait_for_url(f"{base}/runs/**")
    page.evaluate("window.notReloaded = true")
    # Steps come in while the page stays open (it reloads only its steps table).
    page.wait_for_selector("#steps tr[data-status=success]", timeout=3 * MINUTE)
    page.wait_for_selector("#run-status :text('succeeded')", timeout=3 * MINUTE)
    page.wait_for_function(
        "document.querySelectorAll('#steps tr[data-node]').length === 12 && "
        "!document.querySelector('#steps[hx-get]')",
        timeout=MINUTE,
    )
    assert page.evaluate("window.notReloaded") is True
    steps = steps_of_page(page)
    assert steps["model.shop.big_orders"] == "success"
    assert set(steps.values()) == {"success", "pass"}
    test_row = page.locator('#steps tr[data-node^="test.shop.unique_customer_revenue"]')
    assert "on customer_revenue.customer_id" in test_row.inner_text()
    seed_row = page.locator('#steps tr[data-node="seed.shop.raw_orders"]')
    assert "5" in seed_row.locator("td").nth(4).inner_text()  # rows

    # The pipeline page: the model graph with each node's last status, and the docs.
    page.goto(f"{base}/pipelines/shop/")
    node = page.locator('#models [data-node="model.shop.big_orders"]')
    assert node.locator("rect.run-success").count() == 1
    assert page.locator("#models .graph-edge").count() == 5
    page.wait_for_selector("#models [data-graph][data-laid-out]")  # placed by dagre
    assert serious_violations(page) == []  # the models section too (axe-core)
    with page.context.expect_page() as opened:
        page.click("#models-docs")
    docs = opened.value
    # dbt's own docs app, its project and catalogue inlined: search finds the model.
    docs.wait_for_selector("text=Welcome to the auto-generated documentation", timeout=MINUTE)
    docs.fill("input[placeholder='Search for models...']", "customer_revenue")
    docs.wait_for_selector("text=customer_revenue >> visible=true", timeout=MINUTE)
    # Sandboxed: the page cannot read Fast-Flow's cookies nor call it.
    assert docs.evaluate(
        "() => { try { return document.cookie; } catch (e) { return 'denied'; } }"
    ) in (
        "",
        "denied",
    )

    # One run with the known-bad test let in (a run value): it fails, naming the test.
    run_from_form(
        page,
        base,
        "shop",
        **{"#run-with-parameters [name=param_name] >> nth=0": "FASTFLOW_EXCLUDE"},
    )
    page.wait_for_selector("#run-status :text('failed')", timeout=3 * MINUTE)
    summary = page.inner_text("#run-summary")
    assert "test not_null_stg_orders_customer_id on stg_orders.customer_id failed" in summary
    page.wait_for_function("!document.querySelector('#steps[hx-get]')", timeout=MINUTE)
    failing = page.locator('#steps tr[data-node^="test.shop.not_null_stg_orders_customer_id"]')
    assert failing.get_attribute("data-status") == "fail"
    skipped = page.locator('#steps tr[data-node="model.shop.customer_revenue"]')
    assert "skipped: test not_null_stg_orders_customer_id failed upstream" in skipped.inner_text()

    # The run form's own selection fields.
    run_from_form(page, base, "shop", **{"[name=models_select]": "stg_customers"})
    page.wait_for_selector("#run-status :text('succeeded')", timeout=3 * MINUTE)
    page.wait_for_function("!document.querySelector('#steps[hx-get]')", timeout=MINUTE)
    assert {
        n.split(".")[-1] if n.startswith("model") else n.split(".")[2] for n in steps_of_page(page)
    } == {
        "stg_customers",
        "not_null_stg_customers_customer_id",
        "unique_stg_customers_customer_id",
    }
    # (Read from the page: this process's database connection may be one an earlier test's
    # outage ended, held in Playwright's event-loop context.)
    assert "FASTFLOW_SELECT=stg_customers" in page.inner_text("#run-summary")


@pytest.mark.parametrize("models_instance", ["with fft"], indirect=True)
def test_a_fastflowtransform_run_and_its_docs(models_instance, browser):
    base = models_instance
    page = browser.new_page()
    log_in(page, base)
    start_run(page, base, "fft_shop")
    page.wait_for_selector("#run-status :text('succeeded')", timeout=3 * MINUTE)
    page.wait_for_function("!document.querySelector('#steps[hx-get]')", timeout=MINUTE)
    steps = steps_of_page(page)
    assert steps["model.big_orders"] == "success"
    assert steps["seed.raw_orders"] == "success"
    orphan_test = page.locator('#steps tr[data-node="test.not_null.orders.customer_id"]')
    assert "on orders.customer_id" in orphan_test.inner_text()
    page.goto(f"{base}/pipelines/fft_shop/")
    assert "Fingerprint cache" in page.inner_text("main")
    assert page.locator('#models [data-node="model.customer_revenue.ff"] rect.run-success').count()
    with page.context.expect_page() as opened:
        page.click("#models-docs")
    docs = opened.value
    docs.wait_for_selector("text=customer_revenue >> visible=true", timeout=MINUTE)
