"""The daily view in a real Chromium: every page passes axe-core (no serious or critical
violation) in light and dark and at a phone's width, the theme toggle is remembered, and a
run goes from queued to its end on the dashboard, the pipeline page and the run page
without a reload, moving nothing on the page as it does."""

from __future__ import annotations

import re

import pytest
from axe_playwright_python.sync_playwright import Axe

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun
from runs_app.stored_logs import store_lines
from tests.runs_app.test_browser import instance, log_in, start_run  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("runs_setup"),
]
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 860}
SERIOUS = ("serious", "critical")
# The outermost elements that reach past the right edge (inside a scrolling box is fine).
TOO_WIDE = """
(() => {
  const SCROLLING = ".table-wrap, .calendar, .timeline, .graph-wrap, pre, .log-lines, .topbar nav";
  const edge = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= edge + 1) return "";
  const wide = [];
  for (const element of document.body.querySelectorAll("*")) {
    if (element.getBoundingClientRect().right <= edge + 1) continue;
    if (element.closest(SCROLLING)) continue;
    if (wide.some((outer) => outer.contains(element))) continue;
    wide.push(element);
  }
  const named = (e) => `${e.tagName.toLowerCase()}.${e.className} ${e.textContent.slice(0, 40)}`;
  return wide.slice(0, 3).map(named).join(", ");
})()
"""


def serious_violations(page) -> list[str]:
    results = Axe().run(page)
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} — "
        + "; ".join(node["target"][0] for node in violation["nodes"][:3])
        for violation in results.response["violations"]
        if violation["impact"] in SERIOUS
    ]


def test_every_page_passes_axe_light_dark_and_on_a_phone(instance, browser):  # noqa: F811
    ticker = Pipeline.objects.get(name="ticker")
    ended = PipelineRun.objects.create(pipeline=ticker, status="failed", error_message="boom")
    store_lines(ended.pk, 1, [b"2026-12-06T10:00:00.000Z stdout Traceback: boom\n"])
    setup = browser.new_page()
    log_in(setup, instance)
    start_run(setup, instance, "sleeper")
    live_run = setup.url.removeprefix(instance)
    cookies = setup.context.cookies()
    pages = {
        "dashboard": "/",
        "pipelines": "/pipelines/",
        "pipeline": "/pipelines/ticker/",
        "pipeline code": "/pipelines/ticker/code/",
        "search": "/runs/search/?q=boom",
        "run, live": live_run,
        "run, ended": f"/runs/{ended.public_id}/",
        "runs": "/runs/",
        "chains": "/graph/",
        "workers": "/workers/",
        "secrets": "/secrets/",
        "people": "/people/",
        "audit": "/audit/",
        "account": "/account/",
        "repository": "/sync/",
    }
    problems = []
    for scheme, size in (("light", DESKTOP), ("dark", DESKTOP), ("light", PHONE)):
        context = browser.new_context(viewport=size, color_scheme=scheme)
        anonymous = context.new_page()
        anonymous.goto(f"{instance}/accounts/login/")
        where = f"sign-in {scheme} {size['width']}"
        problems += [f"{where}: {v}" for v in serious_violations(anonymous)]
        context.add_cookies(cookies)
        page = context.new_page()
        for name, url in pages.items():
            response = page.goto(instance + url)
            assert response.status == 200, (name, response.status)
            if name == "run, live":
                page.wait_for_selector(".log-line", timeout=30_000)
            if name == "search":
                assert page.locator(".search-results mark").count() == 1
            where = f"{name} {scheme} {size['width']}"
            problems += [f"{where}: {v}" for v in serious_violations(page)]
            # Nothing wider than the phone: tables scroll inside their box.
            if size is PHONE and (wide := page.evaluate(TOO_WIDE)):
                problems.append(f"{where}: wider than the phone: {wide}")
        context.close()
    assert problems == []


def test_the_theme_toggle_is_remembered(instance, browser):  # noqa: F811
    context = browser.new_context(color_scheme="light")
    page = context.new_page()
    log_in(page, instance)
    page.goto(f"{instance}/")
    background = "getComputedStyle(document.body).backgroundColor"
    light = page.evaluate(background)
    assert page.get_attribute("#theme-toggle", "aria-label") == "Switch to the dark theme"
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    dark = page.evaluate(background)
    assert dark != light
    page.goto(f"{instance}/runs/")  # another page, later: still dark, from the first paint
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.evaluate(background) == dark
    assert page.get_attribute("#theme-toggle", "aria-label") == "Switch to the light theme"
    context.close()


LAYOUT_SHIFTS = """
window.shifted = 0;
new PerformanceObserver(function (list) {
  for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.shifted += entry.value;
}).observe({ type: "layout-shift", buffered: false });
"""


def test_a_run_goes_from_queued_to_its_end_on_every_page_without_a_reload(
    instance,  # noqa: F811
    browser,
):
    context = browser.new_context(viewport=DESKTOP)
    starter = context.new_page()
    log_in(starter, instance)
    dashboard, pipeline_page = context.new_page(), context.new_page()
    dashboard.goto(f"{instance}/")
    pipeline_page.goto(f"{instance}/pipelines/ticker/")
    for page in (dashboard, pipeline_page):
        page.evaluate("window.notReloaded = true")
        page.evaluate(LAYOUT_SHIFTS)
    assert dashboard.inner_text("#count-succeeded") == "0"
    start_run(starter, instance, "ticker")
    run_id = starter.url.rstrip("/").rsplit("/", 1)[1]
    starter.evaluate(LAYOUT_SHIFTS)
    # Running: on the dashboard with its worker, on the pipeline page in its table.
    dashboard.wait_for_selector(f"#now-running #now-{run_id}", timeout=60_000)
    assert re.search(r"\bon \S+ · since", dashboard.inner_text(f"#now-{run_id}"))  # its worker
    pipeline_page.wait_for_selector(f"#recent-runs a[href='/runs/{run_id}/']", timeout=30_000)
    # Ended: the counts, the timeline and the tables say so by themselves.
    dashboard.wait_for_function(
        "document.getElementById('count-succeeded').textContent === '1'", timeout=90_000
    )
    assert dashboard.locator(f"#now-{run_id}").count() == 0
    assert dashboard.locator(f"#timeline a[href='/runs/{run_id}/']").count() == 1
    pipeline_page.wait_for_selector("#recent-runs .badge.run-succeeded", timeout=30_000)
    starter.wait_for_selector("#run-status :text('succeeded')", timeout=30_000)
    for page in (dashboard, pipeline_page):
        assert page.evaluate("window.notReloaded") is True
    assert dashboard.evaluate("window.shifted") < 0.1  # the live parts keep their size
    assert starter.evaluate("window.shifted") < 0.1  # the log keeps its place
    context.close()


def test_find_in_the_log_and_link_to_a_line(instance, browser):  # noqa: F811
    page = browser.new_page()
    log_in(page, instance)
    start_run(page, instance, "ticker")
    page.wait_for_selector("#run-status :text('succeeded')", timeout=90_000)
    page.wait_for_selector(".log-line:has-text('tick 12')")
    page.fill(".log-find", "tick 1")
    assert page.inner_text(".log-search-count") == "1 of 4"  # 1, 10, 11, 12
    assert page.inner_text(".log-line.current-match .log-text") == "tick 1"
    page.click(".log-find-next")
    assert page.inner_text(".log-search-count") == "2 of 4"
    assert page.inner_text(".log-line.current-match .log-text") == "tick 10"
    page.click(".log-find-previous")
    page.click(".log-find-previous")  # wraps around to the last
    assert page.inner_text(".log-line.current-match .log-text") == "tick 12"
    page.fill(".log-find", "no such text")
    assert page.inner_text(".log-search-count") == "no match"
    # A line's number links to it; opening the link marks that line.
    row = page.locator(".log-line", has_text="tick 7")
    line = row.get_attribute("id")
    url = page.url.split("#")[0] + "#" + line
    other = browser.new_page()
    other.context.add_cookies(page.context.cookies())
    other.goto(url)
    other.wait_for_selector(f"#{line}.linked")
    assert other.inner_text(f"#{line} .log-text") == "tick 7"
    # Search across runs finds it, and its line link opens the run there.
    other.goto(f"{instance}/runs/search/?q=tick+7")
    found = other.locator(".search-results .found-line a")
    assert found.count() == 1 and found.inner_text() == line.replace("L", "line ")
    found.click()
    other.wait_for_selector(f"#{line}.linked")


def test_a_chain_graph_of_200_pipelines_is_laid_out_readably_and_zooms(
    instance,  # noqa: F811
    browser,
    make_pipeline,
):
    names = [f"c{i:03}" for i in range(200)]
    for i, name in enumerate(names):  # a binary tree: c000 starts c001 and c002, …
        children = [names[j] for j in (2 * i + 1, 2 * i + 2) if j < len(names)]
        make_pipeline(name, config={"downstream_triggers": [{"pipeline": c} for c in children]})
    discover()
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    log_in(page, instance)
    page.goto(f"{instance}/graph/")
    page.wait_for_selector("[data-graph][data-laid-out]")
    boxes = page.evaluate(NODE_BOXES)
    assert len(boxes) == 203  # the tree and the instance's three
    placed = list(boxes.values())
    for index, (x, y, w, h) in enumerate(placed):  # no two nodes overlap
        for x2, y2, w2, h2 in placed[index + 1 :]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y
    for i, name in enumerate(names[1:], start=1):  # every arrow points down a layer
        assert boxes[name][1] > boxes[names[(i - 1) // 2]][1]
    # Readable from the start: full size, not shrunk to fit 200 nodes into the box.
    assert float(page.get_attribute("[data-graph]", "data-scale")) >= 0.6
    assert serious_violations(page) == []
    page.click("[data-zoom=fit]")
    fitted = float(page.get_attribute("[data-graph]", "data-scale"))
    assert fitted < 0.6
    page.click("[data-zoom=in]")
    assert float(page.get_attribute("[data-graph]", "data-scale")) > fitted
    # Dragging moves the view and follows no link; a click on a node does.
    before = page.get_attribute("[data-graph] svg", "viewBox")
    node = page.locator('[data-node="c000"] rect')
    box = node.bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + 120, box["y"] + 80, steps=5)
    page.mouse.up()
    assert page.get_attribute("[data-graph] svg", "viewBox") != before
    assert page.url.endswith("/graph/")
    page.locator('[data-node="c000"] rect').click()
    page.wait_for_url(f"{instance}/pipelines/c000/")
    context.close()


NODE_BOXES = """
Object.fromEntries(Array.from(document.querySelectorAll(".graph-node")).map((node) => {
  const m = node.transform.baseVal.consolidate().matrix;
  const rect = node.querySelector("rect");
  return [node.dataset.node, [m.e, m.f, +rect.getAttribute("width"), +rect.getAttribute("height")]];
}))
"""
