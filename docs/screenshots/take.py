"""Screenshots of the daily view, light and dark, into docs/screenshots/ (the README shows
them).

    uv run python docs/screenshots/take.py        # needs Chromium at /usr/bin/chromium

A throw-away instance: SQLite in a temp folder, the example pipelines, a year of made-up run
history (one run still going, with its log and CPU/memory), daphne serving it. No worker
runs: the pictures show history, not a test."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "demo", "demo-screens-only"
SIZE = {"width": 1360, "height": 900}

sys.path.insert(0, str(ROOT))
DATA = Path(tempfile.mkdtemp(prefix="fastflow-screens-"))
os.environ.update(
    DJANGO_SETTINGS_MODULE="fastflow_site.settings",
    DATA_DIR=str(DATA),
    LOGS_DIR=str(DATA / "logs"),
    PIPELINES_DIR=str(ROOT / "examples" / "pipelines"),
    TIME_ZONE="Europe/Berlin",
)

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from pipelines_app.discovery import discover  # noqa: E402
from pipelines_app.models import Pipeline  # noqa: E402
from runs_app.logs import utc_timestamp  # noqa: E402
from runs_app.models import PipelineRun, RunDay, WorkerNode, WorkerProcess  # noqa: E402
from runs_app.stored_logs import store_lines, store_samples  # noqa: E402

# How often each example runs (hours between runs) and how often it fails.
HABITS = {
    "hello_world": (2, 0.01),
    "slow_counter": (6, 0.05),
    "shop_models": (12, 0.08),
    "with_requirements": (4, 0.03),
    "print_env": (24, 0.0),
    "always_fails": (48, 1.0),
}


def seed_history() -> None:
    now = timezone.now()
    rng = random.Random(27)  # noqa: S311 (made-up history, not secrets)
    per_day: Counter = Counter()
    runs = []
    pipelines = {p.name: p for p in Pipeline.objects.all()}
    for name, (every, failing) in HABITS.items():
        moment = now - timedelta(days=365)
        while moment < now - timedelta(minutes=20):
            moment += timedelta(hours=every * rng.uniform(0.6, 1.4))
            if moment > now - timedelta(minutes=20):
                break
            if rng.random() < 0.15 and moment < now - timedelta(days=30):
                continue  # some quiet days
            failed = rng.random() < failing
            status = "failed" if failed else "succeeded"
            took = timedelta(seconds=rng.uniform(3, 40 if name != "slow_counter" else 900))
            runs.append(PipelineRun(
                pipeline=pipelines[name], status=status, queued_at=moment,
                started_at=moment + timedelta(seconds=rng.uniform(0.2, 2)),
                finished_at=moment + took, trigger="schedule",
                failure_reason="exit_code" if failed else "",
                error_message="exited with code 1: KeyError: 'orders'" if failed else "",
            ))  # fmt: skip
            per_day[timezone.localdate(moment), status] += 1
    PipelineRun.objects.bulk_create(runs, batch_size=2000)
    RunDay.objects.bulk_create(RunDay(day=d, status=s, count=n) for (d, s), n in per_day.items())
    failed = PipelineRun.objects.filter(status="failed").order_by("-queued_at")[:40]
    for run in failed:  # the search page finds them by their traceback
        moment = utc_timestamp(run.started_at)
        store_lines(run.pk, 1, [f"{moment} O {text}\n".encode() for text in (
            "loading orders from the shop's API", "Traceback (most recent call last):",
            '  File "main.py", line 12, in <module>', "KeyError: 'orders'",
        )])  # fmt: skip


def seed_now() -> PipelineRun:
    """One run going (log and samples stored), one waiting."""
    now = timezone.now()
    WorkerNode.report("node-1", labels={}, capacity=4, engine="docker", pool={})
    WorkerProcess.report("node-1:4242:demo", engine_ok=True, node="node-1")
    pipeline = Pipeline.objects.get(name="slow_counter")
    run = PipelineRun.objects.create(
        pipeline=pipeline, status="running", queued_at=now - timedelta(minutes=3),
        started_at=now - timedelta(minutes=3) + timedelta(seconds=0.4),
        worker_id="node-1:4242:demo", trigger="manual",
    )  # fmt: skip
    lines = [(f"{utc_timestamp(now - timedelta(seconds=180 - i))} S setup: environment linked "
              "from the cache in 0.21 s\n") if i == 0 else
             f"{utc_timestamp(now - timedelta(seconds=180 - i))} O \x1b[32mstep\x1b[0m {i}: "
             f"counted {i * 137} rows\n" for i in range(160)]  # fmt: skip
    store_lines(run.pk, 1, [line.encode() for line in lines])
    samples = [{"t": utc_timestamp(now - timedelta(seconds=180 - i)),
                "cpu": 40 + 30 * ((i // 7) % 3), "mem": (80 + i // 2) * 1024 * 1024}
               for i in range(0, 180, 2)]  # fmt: skip
    store_samples(run.pk, 1, samples)
    PipelineRun.objects.create(pipeline=Pipeline.objects.get(name="hello_world"), status="queued")
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    call_command("migrate", verbosity=0)
    discover()
    seed_history()
    running = seed_now()
    get_user_model().objects.create_superuser(USER, "demo@example.com", PASSWORD)
    port = free_port()
    web_log = open(DATA / "web.log", "w")  # noqa: SIM115 (daphne's output, read at the end)
    web = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "fastflow_site.asgi:application"],
        cwd=ROOT, env=os.environ.copy(), stdout=web_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    pages = {
        "dashboard": "/",
        "pipelines": "/pipelines/",
        "pipeline": "/pipelines/shop_models/",
        "runs": "/runs/",
        "pipeline-code": "/pipelines/print_env/code/",
        "run": f"/runs/{running.public_id}/",
        "search": "/runs/search/?q=KeyError",
        "chains": "/graph/",
        "workers": "/workers/",
    }
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        shoot(base, pages)
    finally:
        web.terminate()
        web.wait()
        if "Traceback" in (DATA / "web.log").read_text():
            print((DATA / "web.log").read_text())
        shutil.rmtree(DATA, ignore_errors=True)


def shoot(base: str, pages: dict[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport=SIZE, color_scheme=scheme)
            page.goto(f"{base}/accounts/login/")
            page.fill("#id_login", USER)
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            for name, url in pages.items():
                page.goto(base + url)
                if name == "run":
                    page.wait_for_selector(".log-line >> nth=100")
                if page.locator("[data-graph]").count():
                    page.wait_for_selector("[data-graph][data-laid-out]")
                page.screenshot(path=OUT / f"{name}-{scheme}.png", full_page=name != "run")
                print(f"docs/screenshots/{name}-{scheme}.png")
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
