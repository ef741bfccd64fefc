"""How fast the everyday run questions are with many runs in the database.

    uv run python bench/run_queries.py                  # SQLite file in a temp folder
    DATABASE_URL=postgres://postgres@127.0.0.1/fastflow uv run python bench/run_queries.py

It creates a throw-away database (PostgreSQL: test_<name>, dropped at the end), inserts
--runs runs over --pipelines pipelines spread over 90 days, and prints p50/p95 of each query.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")
if not os.environ.get("DATABASE_URL"):
    # Never the instance's own DATA_DIR: a folder of the bench's (page_times.py hands its
    # folder to the process that measures).
    os.environ["DATA_DIR"] = os.environ.get("FASTFLOW_BENCH_DATA_DIR") or tempfile.mkdtemp(
        prefix="fastflow-bench-"
    )

import django

django.setup()

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from bench.common import percentiles
from pipelines_app.models import Pipeline
from runs_app.models import LogText, PipelineRun, RunDay


def timed(label: str, query, repeat: int) -> None:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        query()
        samples.append((time.perf_counter() - began) * 1000)
    p50, p95, _ = percentiles(samples)
    print(f"  {label:<48} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms")


def populate(
    run_count: int, pipeline_count: int, days: int = 90, logs: bool = False
) -> list[Pipeline]:
    """Runs spread over the last `days`, numbered in the order they were queued (as real
    ones are), and the calendar's day counts that ending them would have kept (RunDay).
    With `logs`, each run has a short log's searchable text (LogText): a few lines, a
    traceback in the failed ones, "ConnectionRefusedError" in about 1 run in 500."""
    now = timezone.now()
    pipelines = Pipeline.objects.bulk_create(
        Pipeline(name=f"p{i:03}", folder_path=f"/p/{i}", discovered_at=now, last_seen_at=now)
        for i in range(pipeline_count)
    )
    statuses = ["succeeded"] * 80 + ["failed"] * 15 + ["cancelled", "timed_out"] * 2 + ["queued"]
    rng = random.Random(7)
    batch = []
    per_day: Counter = Counter()
    ages = sorted((rng.uniform(0, days * 86400) for _ in range(run_count)), reverse=True)
    for age in ages:
        queued_at = now - timedelta(seconds=age)
        status = rng.choice(statuses)
        batch.append(
            PipelineRun(
                pipeline=rng.choice(pipelines),
                status=status,
                queued_at=queued_at,
                started_at=queued_at + timedelta(seconds=1),
                finished_at=queued_at + timedelta(seconds=rng.uniform(2, 600)),
            )
        )
        if status != "queued":
            per_day[timezone.localdate(queued_at), status] += 1
        if len(batch) == 5000:
            _create(batch, rng, logs)
            batch = []
    _create(batch, rng, logs)
    RunDay.objects.bulk_create(
        RunDay(day=day, status=status, count=n) for (day, status), n in per_day.items()
    )
    return pipelines


def _create(runs: list[PipelineRun], rng: random.Random, logs: bool) -> None:
    PipelineRun.objects.bulk_create(runs)
    if logs:
        LogText.objects.bulk_create(
            LogText(run=run, first_seq=1, text=_log_text(run, rng)) for run in runs
        )


def _log_text(run: PipelineRun, rng: random.Random) -> str:
    lines = [
        f"Starting {run.pipeline.name} on node-{rng.randint(1, 9)}",
        f"loaded {rng.randint(1, 10**6)} rows from source_{rng.randint(1, 400)}",
    ]
    if rng.random() < 0.002:
        lines.append("ConnectionRefusedError: [Errno 111] Connection refused")
    if run.status == "failed":
        lines.append("Traceback (most recent call last):")
        lines.append(f'  File "main.py", line {rng.randint(1, 300)}')
        lines.append(f"ValueError: bad value in column c{rng.randint(1, 60)}")
    else:
        lines.append(f"done in {rng.uniform(0, 600):.1f} s")
    return "\n".join(lines)


@contextlib.contextmanager
def test_database():
    """A throw-away database: PostgreSQL's test_<name> (dropped after), or the temp SQLite."""
    old_name = connection.settings_dict["NAME"]
    if connection.vendor == "postgresql":
        connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    else:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    try:
        yield
    finally:
        if connection.vendor == "postgresql":
            connection.creation.destroy_test_db(old_name, verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--pipelines", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    with test_database():
        began = time.perf_counter()
        pipelines = populate(args.runs, args.pipelines)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        print(
            f"{connection.vendor}: {args.runs:,} runs over {args.pipelines} pipelines "
            f"(inserted in {time.perf_counter() - began:.1f} s)"
        )
        target = pipelines[len(pipelines) // 2]
        now = timezone.now()
        queries = {
            "runs of one pipeline, newest 50": lambda: PipelineRun.objects.filter(pipeline=target)[
                :50
            ],
            "queued runs, FIFO, first 50": lambda: PipelineRun.objects.filter(
                status="queued"
            ).order_by("queued_at", "id")[:50],
            "failed runs, newest 50": lambda: PipelineRun.objects.filter(status="failed")[:50],
            "runs of the last 24 h, newest 50": lambda: PipelineRun.objects.filter(
                queued_at__gte=now - timedelta(days=1)
            )[:50],
            "page 100 of all runs (50 per page)": lambda: PipelineRun.objects.select_related(
                "pipeline"
            )[4950:5000],
            "count by status, last 24 h": lambda: (
                PipelineRun.objects.filter(queued_at__gte=now - timedelta(days=1))
                .values("status")
                .annotate(n=Count("id"))
            ),
        }
        for label, query in queries.items():
            timed(label, lambda query=query: list(query()), args.repeat)


if __name__ == "__main__":
    main()
