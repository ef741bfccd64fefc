"""The daily view in a real headless Chromium: daphne and a worker as separate processes,
SQLite (or PostgreSQL) shared with the test, no Redis — the default setup — and, for the
live views, with REDIS_URL set (Redis broker and channel layer)."""

from __future__ import annotations

import time
from zoneinfo import ZoneInfo

import pytest
import redis
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from fastflow_site.roles import Role, set_role
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.follow import wait_for
from runs_app.models import PipelineRun, WorkerNode
from tests.runs_app.conftest import redis_database
from tests.runs_app.test_worker import Worker, kill_group, start_web_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("runs_setup")]

TICKER = (
    "import time\nfor i in range(1, 13):\n"
    "    print(f'\\x1b[32mtick\\x1b[0m {i}', flush=True)\n    time.sleep(0.4)\n"
)
SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(120)\n"
HOG = (
    "import time\nblock = bytearray(60 * 1024 * 1024)\nprint('holding', flush=True)\n"
    "for i in range(30):\n    block[i * 4096] = 1\n    time.sleep(0.2)\n"
)


@pytest.fixture
def instance(request, settings, tmp_path, make_pipeline, django_user_model, monkeypatch):
    """Web (daphne) and worker processes on the test database; yields the base URL.

    Parametrize it indirectly with "redis" for an instance with REDIS_URL set."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop in this thread
    make_pipeline("ticker", main=TICKER)
    make_pipeline("sleeper", main=SLEEPER)
    make_pipeline("hog", main=HOG, config={"mem_soft_limit": "40m", "mem_hard_limit": "200m"})
    discover()
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    user = django_user_model.objects.create_user("ada", "ada@example.com")
    set_role(user, Role.ADMIN)
    hasher = PBKDF2PasswordHasher()  # the web process knows the real hasher, not the test one
    user.password = hasher.encode("pw-ada-browser", hasher.salt())
    user.save()
    worker = Worker(settings, tmp_path)
    if getattr(request, "param", "files") == "redis":
        environment = {**worker.environment(), "REDIS_URL": redis_database(8)}
        redis.Redis.from_url(environment["REDIS_URL"]).delete("django_q:fastflow:q")
        worker.environment = lambda: environment
    worker.start()
    web, base = start_web_server(worker.environment(), tmp_path / "web.log")
    yield base
    kill_group(web)
    worker.kill()


def log_in(page, base: str) -> None:
    page.goto(f"{base}/pipelines/")
    assert "/accounts/login/" in page.url
    page.fill("#id_login", "ada")
    page.fill("#id_password", "pw-ada-browser")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/pipelines/")


def start_run(page, base: str, pipeline: str) -> None:
    page.goto(f"{base}/pipelines/{pipeline}/")
    page.click("main form button[type=submit]")
    page.wait_for_url(f"{base}/runs/**")


def test_anonymous_people_see_only_the_login_page_and_no_websocket(instance, browser):
    page = browser.new_page()
    page.goto(f"{instance}/pipelines/ticker/")
    assert "/accounts/login/" in page.url
    run = PipelineRun.objects.create(pipeline=Pipeline.objects.get(name="ticker"))
    opened = page.evaluate(
        """(url) => new Promise((resolve) => {
            const socket = new WebSocket(url);
            socket.onopen = () => resolve(true);
            socket.onclose = () => resolve(false);
        })""",
        f"ws://{instance.removeprefix('http://')}/ws/runs/{run.public_id}/log/",
    )
    assert opened is False


@pytest.mark.parametrize("instance", ["files", "redis"], indirect=True)
def test_watch_a_run_live_to_its_end_with_a_reconnect_in_between(instance, browser):
    page = browser.new_page()
    log_in(page, instance)
    start_run(page, instance, "ticker")
    page.evaluate("window.notReloaded = true")
    # Lines appear while the run is still running.
    page.wait_for_selector(".log-line:has-text('tick 2')", timeout=60_000)
    assert "running" in page.inner_text("#run-status")
    # ANSI colours are rendered, not shown as escape codes.
    assert page.locator(".log-line .ansi-green-fg", has_text="tick").count() >= 1
    # A network blip: the socket dies, the page reconnects and resumes after its last line.
    page.evaluate("window.fastflowLog.socket.close()")
    page.wait_for_selector(".log-line:has-text('tick 12')", timeout=60_000)
    # The page switches to the final state by itself.
    page.wait_for_selector("#run-status :text('succeeded')", timeout=60_000)
    assert page.evaluate("window.notReloaded") is True
    texts = page.locator(".log-line.stream-O .log-text").all_inner_texts()
    assert texts == [f"tick {i}" for i in range(1, 13)]  # nothing lost, nothing doubled
    # The filter box and the timestamps toggle.
    page.fill(".log-filter", "tick 1")
    assert page.locator(".log-line.stream-O:visible").count() == 4  # 1, 10, 11, 12
    page.check(".log-timestamps")
    assert page.locator(".log-line:visible .log-time").first.is_visible()


def test_cancel_a_run_from_its_page(instance, browser):
    page = browser.new_page()
    log_in(page, instance)
    start_run(page, instance, "sleeper")
    page.wait_for_selector(".log-line:has-text('sleeping')", timeout=60_000)
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-run")
    page.wait_for_selector("#run-status :text('cancelled')", timeout=60_000)
    run = PipelineRun.objects.get(pipeline__name="sleeper")
    assert wait_for(lambda: PipelineRun.objects.get(pk=run.pk).is_finished, timeout=30)
    assert PipelineRun.objects.get(pk=run.pk).status == PipelineRun.Status.CANCELLED


def test_download_the_log(instance, browser):
    page = browser.new_page(accept_downloads=True)
    log_in(page, instance)
    start_run(page, instance, "ticker")
    page.wait_for_selector("#run-status :text('succeeded')", timeout=60_000)
    with page.expect_download() as download_info:
        page.click("#download-log")
    download = download_info.value
    assert download.suggested_filename.startswith("ticker-")
    with open(download.path(), encoding="utf-8") as downloaded:
        text = downloaded.read()
    assert "\x1b[32mtick\x1b[0m 12" in text
    assert "[fast-flow] finished: succeeded" in text


@pytest.mark.parametrize("instance", ["files", "redis"], indirect=True)
def test_live_cpu_and_memory_chart_with_limits(instance, browser):
    page = browser.new_page()
    log_in(page, instance)
    start_run(page, instance, "hog")
    page.wait_for_selector("#live-metrics:not([hidden]) [data-chart=mem] canvas", timeout=60_000)
    page.wait_for_function(
        "document.querySelector('[data-chart-value=mem]').textContent.includes('MiB')"
    )
    # The values under the pointer, limits included (40m soft, 200m hard in its pipeline.json).
    # The chart is drawn again as samples arrive and when the run ends, which forgets where
    # the pointer was, and the summary above it grows as the run goes (pushing the chart
    # towards the "queued" toast at the bottom): dismiss the toast, then point again (hover
    # scrolls the chart into view) until the legend answers, within a deadline.
    page.click("#toasts .toast-close")
    legend = page.locator('[data-chart="mem"] .u-legend')
    plot = page.locator('[data-chart="mem"] .u-over')
    deadline = time.monotonic() + 45
    while True:
        box = plot.bounding_box()
        plot.hover(position={"x": box["width"] * 0.5, "y": box["height"] / 2})
        plot.hover(position={"x": box["width"] * 0.9, "y": box["height"] / 2})
        try:
            page.wait_for_function(
                "document.querySelector('[data-chart=mem] .u-legend')"
                ".textContent.includes('200 MiB')",
                timeout=2_000,
            )
            break
        except PlaywrightTimeout:
            assert time.monotonic() < deadline, legend.inner_text()
    assert "soft limit" in legend.inner_text() and "40 MiB" in legend.inner_text()


def test_times_show_in_the_persons_time_zone(instance, browser):
    page = browser.new_page(timezone_id="Asia/Tokyo", locale="en-GB")
    log_in(page, instance)
    start_run(page, instance, "ticker")
    title = page.get_attribute("#run-summary time", "title")
    run = PipelineRun.objects.get(pipeline__name="ticker")
    tokyo = run.queued_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert tokyo.strftime("%H:%M") in title


def test_the_chain_graph_is_readable_at_fifty_pipelines(instance, browser, make_pipeline):
    """Fifty pipelines in chains of five, one loop: every pipeline drawn once, no two boxes
    overlapping, each arrow labelled with when it fires, nodes linking to their pipeline."""
    for chain in range(10):
        for step in range(5):
            following = f"c{chain}_s{step + 1}" if step < 4 else None
            triggers = [{"pipeline": following, "on_route": "go"}] if following else []
            if chain == 0 and step == 4:
                triggers = [{"pipeline": "c0_s0", "on_failure": True, "on_success": False}]
            make_pipeline(f"c{chain}_s{step}", config={"downstream_triggers": triggers})
    discover()
    page = browser.new_page()
    log_in(page, instance)
    page.goto(f"{instance}/graph/")
    nodes = page.locator("#chain-graph .graph-node")
    assert nodes.count() == 53  # the fifty, and ticker, sleeper, hog
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('#chain-graph .graph-node rect')]
            .map((r) => r.getBoundingClientRect())
            .map((b) => [b.left, b.top, b.right, b.bottom])"""
    )
    for index, (left, top, right, bottom) in enumerate(boxes):
        for other in boxes[index + 1 :]:
            overlap = left < other[2] and other[0] < right and top < other[3] and other[1] < bottom
            assert not overlap
    labels = page.eval_on_selector_all(
        "#chain-graph .edge-label", "(labels) => labels.map((label) => label.textContent)"
    )
    assert labels.count("route 'go'") == 40 and labels.count("failure") == 1
    page.locator('#chain-graph [data-node="c3_s2"]').click()
    page.wait_for_url(f"{instance}/pipelines/c3_s2/")
    # The pipeline page draws the part around it: who starts it, whom it starts.
    around = page.locator("#chains .graph-node")
    assert sorted(around.evaluate_all("(nodes) => nodes.map((n) => n.dataset.node)")) == [
        "c3_s1",
        "c3_s2",
        "c3_s3",
    ]


def test_the_workers_page_shows_the_node_and_drains_it(instance, browser):
    page = browser.new_page()
    log_in(page, instance)
    assert wait_for(lambda: WorkerNode.alive().exists(), timeout=30)
    name = WorkerNode.objects.get().name
    page.goto(f"{instance}/workers/")
    node = page.locator(f'[data-node="{name}"]')
    # Its health badge (ok, or why not: a busy machine may show a slow loop for a moment).
    assert node.locator("[data-state]").count() == 1
    assert "0 of" in node.locator(".in-flight").inner_text()
    page.on("dialog", lambda dialog: dialog.accept())  # "Drain …? It takes no new runs"
    node.get_by_role("button", name="Drain").click()
    page.wait_for_selector(f'[data-node="{name}"] [data-state="draining"]', timeout=30_000)
    run = PipelineRun.enqueue(Pipeline.objects.get(name="ticker"), trigger="manual")
    page.goto(f"{instance}{run.get_absolute_url()}")
    waiting = page.locator("#run-waiting").inner_text()
    assert "every worker that could take it is draining" in waiting
    page.goto(f"{instance}/workers/")
    page.get_by_role("button", name="Take runs again").click()
    assert wait_for(
        lambda: PipelineRun.objects.get(pk=run.pk).status == PipelineRun.Status.SUCCEEDED,
        timeout=60,
    )
