"""Issue 15's shape: 40 tiny runs one after another (each queued the moment the previous one
is final, each computing fib(10) and printing it), through a real `manage.py worker`, per
executor — the total, and where each run's time goes ("container started": the sandbox's
or the local process's start for those executors):

    queued → claimed → container started → first line → program ended → final

    uv run python bench/sequential_runs.py                    # docker, sandbox and local
    uv run python bench/sequential_runs.py --executors docker --runs 40 --pool 0 2 8
    uv run python bench/sequential_runs.py --executors docker --pool 2 --pool-max 2 8

Docker is measured once per `--pool` size (RUN_POOL_SIZE; 0: every run waits for its
container to be made) and `--pool-max` (RUN_POOL_MAX: how far the pool may grow while runs
find it empty; the pool's size itself means a pool that never grows), each time from a full
pool (an instance that was idle).

"Final" is when this process saw the row final (it polls every 5 ms); the other moments are
the run's own record (claimed_at, started_at, its first log line's timestamp, finished_at:
the engine's end of the program).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
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

WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-sequential-"))
throwaway_instance(WORK, {"fib": FIB_MAIN}, MAX_CONCURRENT_RUNS="10")

from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun
from runs_app.stored_logs import all_lines

TRIGGER_TO_LINE = "queued → first line"
PHASES = ["queued → claimed", "claimed → started", "started → first line",
          "first line → ended", "ended → final"]  # fmt: skip


def wait_final(pk: int, deadline: float) -> float:
    while time.time() < deadline:
        if PipelineRun.objects.filter(pk=pk, status__in=PipelineRun.FINAL_STATUSES).exists():
            return time.time()
        time.sleep(0.005)
    raise SystemExit(f"run {pk} did not end in time")


def first_line_at(run: PipelineRun) -> float:
    for _, timestamp, stream, _ in all_lines(run.pk):
        if stream == "O":
            moment = datetime.strptime(timestamp[:26], "%Y-%m-%dT%H:%M:%S.%f")
            return moment.replace(tzinfo=UTC).timestamp()
    raise SystemExit(f"run {run.public_id} printed nothing")


def measure(executor: str, count: int, pool: int, pool_max: int | None) -> None:
    if pool_max is not None:
        os.environ["RUN_POOL_MAX"] = str(pool_max)
    worker = start_worker(executor, pool)
    try:
        pipeline = Pipeline.objects.get(name="fib")
        first = PipelineRun.enqueue(pipeline, trigger="api")  # the worker is up and warm
        wait_final(first.pk, time.time() + 120)
        if executor == "docker":
            wait_for_pool(WORK / "data", pool)
        phases: dict[str, list[float]] = {phase: [] for phase in [*PHASES, TRIGGER_TO_LINE]}
        began = time.time()
        for _ in range(count):
            run = PipelineRun.enqueue(pipeline, trigger="api")
            final = wait_final(run.pk, time.time() + 60)
            run.refresh_from_db()
            if run.status != PipelineRun.Status.SUCCEEDED:
                raise SystemExit(f"{executor}: run {run.public_id} {run.status}")
            moments = [run.queued_at.timestamp(), run.claimed_at.timestamp(),
                       run.started_at.timestamp(), first_line_at(run),
                       run.finished_at.timestamp(), final]  # fmt: skip
            for phase, start, end in zip(PHASES, moments, moments[1:], strict=False):
                phases[phase].append(end - start)
            phases[TRIGGER_TO_LINE].append(moments[3] - moments[0])
        total = time.time() - began
        label = executor
        if executor == "docker":
            label += f", pool {pool}" + (f" (max {pool_max})" if pool_max is not None else "")
        print(f"  {label:<15} {count} sequential runs: {total:5.1f} s ({count / total:.1f} runs/s)")
        for phase, samples in phases.items():
            print_percentiles(phase, samples)
    finally:
        stop_worker(worker)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executors", nargs="+", default=["docker", "sandbox", "local"])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--pool", type=int, nargs="+", default=[0, 2], help="RUN_POOL_SIZE")
    parser.add_argument(
        "--pool-max", type=int, nargs="+", default=[None], help="RUN_POOL_MAX (default: 8)"
    )
    args = parser.parse_args()
    print(f"instance in {WORK} (SQLite, ORM broker)")
    for executor in args.executors:
        for pool in args.pool if executor == "docker" else [0]:
            for pool_max in args.pool_max if executor == "docker" and pool else [None]:
                measure(executor, args.runs, pool, pool_max)


if __name__ == "__main__":
    main()
