"""Issue 15's burst: 200 tiny runs queued at once with MAX_CONCURRENT_RUNS=10, through a
real `manage.py worker` — runs per second from the first queued to the last final, whether
they were started in the order they were queued (FIFO), and where a run's time goes.

    uv run python bench/burst.py                                  # docker, pool 0 and 10
    uv run python bench/burst.py --executor local --runs 200
    uv run python bench/burst.py --database-url postgres://postgres@127.0.0.1:5432/ffburst \\
        --redis-url redis://127.0.0.1:6379/9

The database named by --database-url is emptied first (it is the bench's own).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (
    FIB_MAIN,
    print_percentiles,
    start_worker,
    stop_worker,
    throwaway_instance,
    wait_for_pool,
)

WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-burst-"))
parser = argparse.ArgumentParser()
parser.add_argument("--executor", default="docker", choices=["docker", "local"])
parser.add_argument("--runs", type=int, default=200)
parser.add_argument("--pool", type=int, nargs="+", default=[0, 10], help="RUN_POOL_SIZE")
parser.add_argument("--database-url", default=f"sqlite:///{WORK / 'db.sqlite3'}")
parser.add_argument("--redis-url", default="")
args = parser.parse_args()
throwaway_instance(
    WORK,
    {"fib": FIB_MAIN},
    flush="postgres" in args.database_url,
    DATABASE_URL=args.database_url,
    REDIS_URL=args.redis_url,
    MAX_CONCURRENT_RUNS="10",
)

from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun


def wait_all_final(ids: list[int], timeout: float) -> None:
    deadline = time.time() + timeout
    active = PipelineRun.objects.filter(pk__in=ids, status__in=PipelineRun.ACTIVE_STATUSES)
    while active.exists():
        if time.time() > deadline:
            raise SystemExit(f"{active.count()} runs did not end in {timeout:.0f} s")
        time.sleep(0.05)


def measure(pool: int) -> None:
    worker = start_worker(args.executor, pool)
    try:
        pipeline = Pipeline.objects.get(name="fib")
        first = PipelineRun.enqueue(pipeline, trigger="api")  # the worker is up and warm
        wait_all_final([first.pk], 120)
        if args.executor == "docker":
            wait_for_pool(WORK / "data", pool)
        began = time.time()
        runs = [PipelineRun.enqueue(pipeline, trigger="webhook") for _ in range(args.runs)]
        wait_all_final([r.pk for r in runs], 60 + args.runs * 2)
        done = PipelineRun.objects.filter(pk__in=[r.pk for r in runs])
        last = max(r.finished_at.timestamp() for r in done)
        total = last - began
        failed = done.exclude(status=PipelineRun.Status.SUCCEEDED).count()
        by_claim = list(done.order_by("claimed_at", "pk").values_list("pk", flat=True))
        fifo = by_claim == [r.pk for r in runs]
        label = f"{args.executor}, pool {pool}" if args.executor == "docker" else args.executor
        print(
            f"  {label:<15} {args.runs} runs queued at once: {total:5.1f} s "
            f"({args.runs / total:.1f} runs/s), FIFO {'yes' if fifo else 'NO'}, "
            f"{failed} not succeeded"
        )
        waits = [(r.claimed_at - r.queued_at).total_seconds() for r in done]
        starts = [(r.started_at - r.claimed_at).total_seconds() for r in done]
        print_percentiles("queued → claimed", waits, 18)
        print_percentiles("claimed → started", starts, 18)
    finally:
        stop_worker(worker)


def main() -> None:
    database = "PostgreSQL" if "postgres" in args.database_url else "SQLite"
    broker = "Redis" if args.redis_url else "ORM broker"
    print(f"instance in {WORK} ({database}, {broker}, MAX_CONCURRENT_RUNS=10)")
    for pool in args.pool if args.executor == "docker" else [0]:
        measure(pool)


if __name__ == "__main__":
    main()
