"""The swarm executor beside the Docker executor, on the same machine in the same run:
trigger → first line, and 40 tiny runs in a row (each queued the moment the previous one is
final, each printing fib(10)), through a real `manage.py worker` per executor.

    uv run python bench/swarm_latency.py               (as root: it makes the lab)
    uv run python bench/swarm_latency.py --runs 40 --first-lines 10

The Swarm is the test lab (tests/lab.py): three Docker engines in network namespaces of
their own, joined in one Swarm, the worker image loaded on each; the worker talks to its
manager. The Docker executor uses this machine's engine, with fresh containers (no pool:
what a Swarm can offer) and again with the default pool. SQLite, no Redis.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (
    FIB_MAIN,
    percentiles,
    start_worker,
    stop_worker,
    throwaway_instance,
    wait_for_pool,
)

WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-swarm-"))
throwaway_instance(WORK, {"fib": FIB_MAIN}, MAX_CONCURRENT_RUNS="10")

from django.conf import settings

from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun
from runs_app.stored_logs import all_lines
from tests import lab as lab_module


def first_line(pk: int, began: float, deadline: float) -> float:
    while time.monotonic() < deadline:
        for _, _, stream, _ in all_lines(pk):
            if stream == "O":
                return time.monotonic() - began
        time.sleep(0.005)
    raise SystemExit(f"run {pk}: no output in time")


def final(pk: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        run = PipelineRun.objects.filter(pk=pk, status__in=PipelineRun.FINAL_STATUSES).first()
        if run is not None:
            if run.status != PipelineRun.Status.SUCCEEDED:
                raise SystemExit(f"run {pk} {run.status}: {run.error_message}")
            return
        time.sleep(0.005)
    raise SystemExit(f"run {pk} did not end in time")


def measure(label: str, executor: str, pool: int, runs: int, first_lines: int) -> None:
    worker = start_worker(executor, pool, "--tick", "0.5")
    pipeline = Pipeline.objects.get(name="fib")
    try:
        if pool:
            wait_for_pool(Path(settings.DATA_DIR), pool)
        final(PipelineRun.enqueue(pipeline, trigger="api").pk, time.monotonic() + 120)  # warm
        firsts = []
        for _ in range(first_lines):
            began = time.monotonic()
            run = PipelineRun.enqueue(pipeline, trigger="api")
            firsts.append(first_line(run.pk, began, began + 120))
            final(run.pk, began + 120)
        began = time.monotonic()
        for _ in range(runs):
            final(PipelineRun.enqueue(pipeline, trigger="api").pk, time.monotonic() + 120)
        total = time.monotonic() - began
    finally:
        stop_worker(worker)
    p50, p95, _ = percentiles(firsts)
    print(
        f"  {label:<28} first line p50 {p50 * 1000:6.0f} ms  p95 {p95 * 1000:6.0f} ms   "
        f"{runs} in a row {total:6.1f} s ({runs / total:4.1f} runs/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--first-lines", type=int, default=10)
    args = parser.parse_args()
    if why := lab_module.available():
        raise SystemExit(f"the Swarm lab needs {why}")
    lab = lab_module.Lab(
        ["b1", "b2", "b3"],
        engine_options=("--no-new-privileges", "--icc=false"),
        bridge="ffbench0",
        subnet="10.233.0",
    )
    print(f"instance in {WORK} (SQLite); making the Swarm lab (3 engines) ...")
    lab.up([settings.WORKER_IMAGE])
    try:
        lab.swarm()
        print("trigger → first line stored; then runs one after another")
        measure("docker, fresh containers", "docker", 0, args.runs, args.first_lines)
        measure("docker, pool of 2", "docker", 2, args.runs, args.first_lines)
        os.environ["DOCKER_HOST"] = lab.engines[0].socket
        measure("swarm (3 nodes)", "swarm", 0, args.runs, args.first_lines)
    finally:
        os.environ.pop("DOCKER_HOST", None)
        lab.down()


if __name__ == "__main__":
    main()
