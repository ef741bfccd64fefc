"""End-to-end delay from a line printed in a container to it appearing in the browser.

    uv run python bench/live_log_latency.py [--lines 60] [--executor docker] [--redis URL]

A throw-away instance (SQLite in a temp folder): daphne and a worker as separate processes,
Debian's Chromium driven by Playwright. The pipeline prints a line every 100 ms with the
wall-clock time it printed it; the page records when each line was added to the log view.
Same machine, same clock. Target: p50 under 300 ms. With --redis (e.g.
redis://127.0.0.1:6379/10, an empty database) the instance runs with REDIS_URL set: Redis
broker, and lines pushed through the channel layer instead of the viewer polling the database.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import CHROMIUM_ARGS, free_port, percentiles, sign_in, wait_until_answering

PASSWORD = "bench-password"  # noqa: S105 - a throw-away instance

WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-live-"))
PIPELINE = (
    "import time\nfor i in range({lines}):\n"
    "    print(f'line {{i}} {{time.time():.6f}}', flush=True)\n    time.sleep(0.1)\n"
)
# Stamps every log line the moment the viewer adds it.
OBSERVER = """
window.arrivals = [];
new MutationObserver((changes) => {
  const now = Date.now() / 1000;
  for (const change of changes) for (const node of change.addedNodes) {
    if (node.classList && node.classList.contains("stream-O")) {
      window.arrivals.push([node.textContent, now]);
    }
  }
}).observe(document.querySelector(".log-lines"), {childList: true});
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=60)
    parser.add_argument("--executor", default="docker")
    parser.add_argument("--redis", default="", help="REDIS_URL for the instance")
    args = parser.parse_args()
    env = {
        **os.environ,
        "DATA_DIR": str(WORK / "data"),
        "LOGS_DIR": str(WORK / "logs"),
        "PIPELINES_DIR": str(WORK / "pipelines"),
        "FASTFLOW_EXECUTOR": args.executor,
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": args.redis,
    }
    folder = WORK / "pipelines" / "printer"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(PIPELINE.format(lines=args.lines))
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "discover"], cwd=ROOT, env=env, check=True, capture_output=True)
    create_user = (
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_superuser('bench', 'b@example.com', '{PASSWORD}')"
    )
    subprocess.run([*manage, "shell", "-c", create_user], cwd=ROOT, env=env, check=True)
    port = free_port()
    processes = [
        subprocess.Popen(
            [*manage, "worker"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "daphne", "-p", str(port), "fastflow_site.asgi:application"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(port)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            page = browser.new_page()
            sign_in(page, base, "/pipelines/printer/", password=PASSWORD)
            page.click("main form button[type=submit]")
            page.wait_for_url(f"{base}/runs/**")
            page.evaluate(OBSERVER)
            page.wait_for_selector(f".log-line:has-text('line {args.lines - 1} ')", timeout=120_000)
            arrivals = page.evaluate("window.arrivals")
            browser.close()
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
    delays = []
    for text, arrived in arrivals:
        printed = float(text.split()[-1])
        delays.append((arrived - printed) * 1000)
    p50, p95, worst = percentiles(delays)
    print(
        f"{args.executor}, {'Redis channel layer' if args.redis else 'database polling'}: "
        f"{len(delays)} lines printed → shown in Chromium: "
        f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {worst:.0f} ms"
    )


if __name__ == "__main__":
    main()
