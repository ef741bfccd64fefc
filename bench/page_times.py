"""Server time of the dashboard and the runs list with 100,000 runs in the database.

    uv run python bench/page_times.py                       # SQLite file in a temp folder
    DATABASE_URL=postgres://postgres@127.0.0.1/fastflow uv run python bench/page_times.py

Requests go through Django's full stack in-process (middleware, views, templates), so the
figures are the server's share of a page view, without network. Target: under 150 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_queries import connection, populate, test_database  # noqa: I001

from bench.common import percentiles

from django.contrib.auth import get_user_model
from django.test import Client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--pipelines", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with test_database():
        began = time.perf_counter()
        populate(args.runs, args.pipelines)
        print(
            f"{connection.vendor}: {args.runs:,} runs over {args.pipelines} pipelines "
            f"(inserted in {time.perf_counter() - began:.1f} s)"
        )
        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "x")
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        pages = {
            "dashboard /": "/",
            "runs list /runs/": "/runs/",
            "runs list, failed only": "/runs/?status=failed",
            "runs list, page 100": "/runs/?page=100",
            "runs list, one pipeline, 7 days": "/runs/?pipeline=p025&window=7d",
            "pipelines /pipelines/": "/pipelines/",
        }
        for label, url in pages.items():
            client.get(url)  # warm caches
            samples = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                response = client.get(url)
                samples.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200, (url, response.status_code)
            p50, p95, _ = percentiles(samples)
            print(f"  {label:<34} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")


if __name__ == "__main__":
    main()
