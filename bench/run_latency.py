"""Trigger → first log line, and many tiny runs through the queue, for both executors.

    uv run python bench/run_latency.py                     # docker and local
    uv run python bench/run_latency.py --executors local   # one of them

Sets up a throw-away instance (SQLite in a temp folder), starts a real `manage.py worker`
per executor, and measures from `PipelineRun.enqueue` (what the run button does) until the
run's first output line is in its log file — 20 runs one after another, warm uv cache —
then the wall time of 40 tiny runs queued at once, MAX_CONCURRENT_RUNS=10.
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
WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-latency-"))
ENV = {
    "DATA_DIR": str(WORK / "data"),
    "LOGS_DIR": str(WORK / "logs"),
    "PIPELINES_DIR": str(WORK / "pipelines"),
    "MAX_CONCURRENT_RUNS": "10",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(ENV)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")
PIPELINES = {
    "tiny": ("print('first line')\n", None),
    "tiny_deps": ("import six\nprint('first line', six.__version__)\n", "six==1.16.0\n"),
}
for name, (main, requirements) in PIPELINES.items():
    folder = WORK / "pipelines" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(main)
    if requirements:
        (folder / "requirements.txt").write_text(requirements)

import django

django.setup()

from django.core.management import call_command

from bench.common import percentiles, start_worker, stop_worker
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun

call_command("migrate", verbosity=0)
discover()


def log_text(run_id: int) -> str:
    """A run's stored log (runs_app.stored_logs; imported once Django is set up)."""
    from runs_app.stored_logs import log_text as stored

    return stored(run_id)


def first_output_line(run: PipelineRun, deadline: float) -> float | None:
    while time.monotonic() < deadline:
        if " O first line" in log_text(run.pk):
            return time.monotonic()
        time.sleep(0.002)
    return None


def wait_final(run_ids: list[int], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not PipelineRun.objects.filter(
            pk__in=run_ids, status__in=PipelineRun.ACTIVE_STATUSES
        ).exists():
            return True
        time.sleep(0.01)
    return False


def measure(executor: str, latency_runs: int, batch: int) -> None:
    worker = start_worker(executor, None, "--tick", "0.5")
    try:
        for name in PIPELINES:
            pipeline = Pipeline.objects.get(name=name)
            warm = PipelineRun.enqueue(pipeline, trigger="api")  # fills the uv cache
            wait_final([warm.pk], time.monotonic() + 120)
            samples = []
            for _ in range(latency_runs):
                began = time.monotonic()
                run = PipelineRun.enqueue(pipeline, trigger="api")
                seen = first_output_line(run, began + 60)
                if seen is None:
                    raise SystemExit(f"{executor}: no output from run {run.public_id}")
                samples.append(seen - began)
                wait_final([run.pk], time.monotonic() + 60)
            p50, p95, _ = percentiles(samples)
            print(
                f"  {executor:<6} {name:<10} trigger → first line over {latency_runs} runs: "
                f"p50 {p50 * 1000:6.0f} ms   p95 {p95 * 1000:6.0f} ms"
            )
        pipeline = Pipeline.objects.get(name="tiny")
        began = time.monotonic()
        runs = [PipelineRun.enqueue(pipeline, trigger="api") for _ in range(batch)]
        if not wait_final([r.pk for r in runs], began + 600):
            raise SystemExit(f"{executor}: the batch did not finish in 10 minutes")
        elapsed = time.monotonic() - began
        succeeded = PipelineRun.objects.filter(
            pk__in=[r.pk for r in runs], status=PipelineRun.Status.SUCCEEDED
        ).count()
        print(
            f"  {executor:<6} {batch} tiny runs queued at once: {elapsed:5.1f} s wall "
            f"({batch / elapsed:.1f} runs/s, {succeeded}/{batch} succeeded)"
        )
    finally:
        stop_worker(worker)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executors", nargs="+", default=["docker", "local"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=40)
    args = parser.parse_args()
    print(f"instance in {WORK} (SQLite, ORM broker, MAX_CONCURRENT_RUNS=10)")
    for executor in args.executors:
        measure(executor, args.runs, args.batch)


if __name__ == "__main__":
    main()
