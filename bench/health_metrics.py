"""Server time of /metrics and /health/ready/ with 100,000 runs in the database.

    uv run python bench/health_metrics.py                       # SQLite file in a temp folder
    DATABASE_URL=postgres://postgres@127.0.0.1/fastflow uv run python bench/health_metrics.py

Requests go through Django's full stack in-process, as a scrape or a load balancer's probe
would (a METRICS_TOKEN bearer), so the figures are the server's share without network.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from importlib import import_module
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_queries import connection, populate, test_database  # noqa: I001

from bench.common import percentiles

from django.apps import apps
from django.conf import settings
from django.test import Client
from django.utils import timezone

from pipelines_app.models import Schedule
from runs_app.models import PipelineRun, WorkerProcess


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--pipelines", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    settings.METRICS_TOKEN = "bench-token"  # noqa: S105 (a throw-away bench value)
    with test_database():
        began = time.perf_counter()
        pipelines = populate(args.runs, args.pipelines)
        # setup durations for the histogram, a schedule per pipeline, a live worker
        PipelineRun.objects.filter(status="succeeded").update(setup_duration=timedelta(seconds=0.4))
        now = timezone.now()
        Schedule.objects.bulk_create(
            Schedule(pipeline=p, config_id="hourly", interval_seconds=3600, anchor_at=now,
                     next_fire_at=now + timedelta(minutes=5))
            for p in pipelines
        )  # fmt: skip
        # the running totals, as migration 0008 makes them for runs that ended before
        import_module("runs_app.migrations.0008_run_tally").tally_ended_runs(apps, None)
        print(
            f"{connection.vendor}: {args.runs:,} runs over {args.pipelines} pipelines "
            f"(inserted in {time.perf_counter() - began:.1f} s)"
        )
        WorkerProcess.report("bench:1:x", engine_ok=True)  # fresh, whatever the set-up took
        client = Client(HTTP_HOST="localhost", headers={"Authorization": "Bearer bench-token"})
        for label, url in {"/metrics": "/metrics", "/health/ready/": "/health/ready/"}.items():
            client.get(url)  # warm caches
            samples = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                response = client.get(url)
                samples.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200, (url, response.content)
            p50, p95, _ = percentiles(samples)
            size = len(response.content)
            print(f"  {label:<16} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   ({size:,} bytes)")


if __name__ == "__main__":
    main()
