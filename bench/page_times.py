"""Server time of the daily view's pages with many runs in the database, and the bytes each
page sends (its HTML, and the stylesheet and scripts it loads).

    uv run python bench/page_times.py --runs 1000000        # SQLite file in a temp folder
    DATABASE_URL=postgres://postgres@127.0.0.1/fastflow uv run python bench/page_times.py

Requests go through Django's full stack in-process (middleware, views, templates), so the
figures are the server's share of a page view, without network. Target: p95 under 100 ms.
The runs spread over the last year (the dashboard's calendar shows a year); each has a
short log for the log searches. Pages are asked for as browsers do (gzip accepted): the
bytes are the HTML, and what is sent.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_queries import connection, populate, test_database  # noqa: I001

from bench.common import percentiles

from django.contrib.auth import get_user_model
from django.test import Client

from runs_app.models import PipelineRun


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--pipelines", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        measure(args.repeat)
        return
    with test_database():
        began = time.perf_counter()
        populate(args.runs, args.pipelines, days=365, logs=True)
        if connection.vendor == "postgresql":
            # As autovacuum leaves a table this size: statistics, and a visibility map
            # for index-only counts.
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
        print(
            f"{connection.vendor}: {args.runs:,} runs over {args.pipelines} pipelines "
            f"(inserted in {time.perf_counter() - began:.1f} s)",
            flush=True,
        )
        get_user_model().objects.create_superuser("bench", "bench@example.com", "x")
        # Measured by a fresh process, as a web server is: this one holds what inserting a
        # million rows left behind (measured: its dashboard p95 ~110 ms, a fresh one's ~65).
        environment = dict(os.environ)
        if connection.vendor == "postgresql":
            environment["DATABASE_URL"] = _url_of_database(connection.settings_dict["NAME"])
        else:
            environment["FASTFLOW_BENCH_DATA_DIR"] = os.environ["DATA_DIR"]
        connection.close()
        subprocess.run(
            [sys.executable, __file__, "--measure-only", "--repeat", str(args.repeat)],
            env=environment,
            check=True,
        )


def _url_of_database(name: str) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


def measure(repeat: int) -> None:
    """The pages' server times and bytes, on the database populated by the parent."""
    user = get_user_model().objects.get(username="bench")
    client = Client(HTTP_HOST="localhost", HTTP_ACCEPT_ENCODING="gzip")  # as browsers
    client.force_login(user)
    run = PipelineRun.objects.filter(pipeline__name="p025").order_by("-queued_at").first()
    pages = {
        "dashboard /": "/",
        "dashboard, live parts (every 4 s)": "/dashboard/live/",
        "runs list /runs/": "/runs/",
        "runs list, failed only": "/runs/?status=failed",
        "runs list, page 100": "/runs/?page=100",
        "runs list, one pipeline, 7 days": "/runs/?pipeline=p025&window=7d",
        "pipelines /pipelines/": "/pipelines/",
        "pipeline page": "/pipelines/p025/",
        "pipeline page, its runs (every 4 s)": "/pipelines/p025/runs/",
        "run page": f"/runs/{run.public_id}/",
        "log search, rare text (1 run in 500)": "/runs/search/?q=ConnectionRefused",
        "log search, common text (failed runs)": "/runs/search/?q=Traceback",
        "log search, rare text, one pipeline": ("/runs/search/?q=ConnectionRefused&pipeline=p025"),
        "log search, common text, one pipeline, 7 days": (
            "/runs/search/?q=bad+value&pipeline=p025&window=7d"
        ),
        "log search, no match": "/runs/search/?q=no+such+words",
    }
    print(
        f"  {'page':<46} {'p50':>9} {'p95':>10} {'HTML':>9} {'gzip':>8} {'+CSS, JS':>9} {'gzip':>8}"
    )
    for label, url in pages.items():
        first = client.get(url)  # warm caches
        samples = []
        for _ in range(repeat):
            began = time.perf_counter()
            response = client.get(url)
            samples.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        p50, p95, _ = percentiles(samples)
        sent = first.content
        html = gzip.decompress(sent) if first.get("Content-Encoding") == "gzip" else sent
        assets, assets_sent = assets_bytes(html)
        print(
            f"  {label:<46} {p50:6.1f} ms {p95:7.1f} ms {len(html) / 1024:6.1f} KB"
            f" {len(sent) / 1024:5.1f} KB {assets / 1024:6.1f} KB {assets_sent / 1024:5.1f} KB"
        )


def assets_bytes(html: bytes) -> tuple[int, int]:
    """What the stylesheet and scripts the page names weigh, and gzip-compressed as
    whitenoise serves the copies `up` collects (cached by the browser after the first
    page). Scripts a page loads later (dagre, on pages with a graph) are not counted."""
    total = compressed = 0
    for path in re.findall(rb'(?:href|src)="(/static/[^"]+\.(?:css|js))"', html):
        response = Client().get(path.decode())
        body = b"".join(response) if response.streaming else response.content
        total += len(body)
        compressed += len(gzip.compress(body))
    return total, compressed


if __name__ == "__main__":
    main()
