"""Runs that start themselves: schedule fire delay, and webhook → run started.

    uv run python bench/trigger_latency.py [--seconds 180] [--pipelines 4] [--calls 20]
                                           [--executor docker]

A throw-away instance (SQLite in a temp folder, ORM broker) with a real `manage.py worker`
(default tick) and, for the webhooks, daphne.

1. Schedules: `--pipelines` pipelines with `"schedule_interval_seconds": 5` for `--seconds`.
   Fire delay = the run row queued - its due time (`scheduled_for`); start delay = its
   container started - its due time. Target: a due schedule starts its run within 2 s.
2. Webhooks: `--calls` POSTs one after another to /hooks/<name>/ with the key; the 202
   answer time, and POST → the run's container started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import free_port, percentiles, wait_until_answering

WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-triggers-"))
WEBHOOK_KEY = "bench-webhook-key-0123456789"
os.environ.update(
    {
        "DATA_DIR": str(WORK / "data"),
        "LOGS_DIR": str(WORK / "logs"),
        "PIPELINES_DIR": str(WORK / "pipelines"),
        "MAX_CONCURRENT_RUNS": "10",
        "WEBHOOK_RATE_LIMIT": "0",
        "LOG_LEVEL": "WARNING",
    }
)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")


def write_pipeline(name: str, config: dict) -> None:
    folder = WORK / "pipelines" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text("print('started')\n")
    (folder / "pipeline.json").write_text(json.dumps(config))


def summary(label: str, seconds: list[float]) -> str:
    p50, p95, worst = percentiles(seconds)
    return (
        f"  {label:<34} n={len(seconds):<4} p50 {p50 * 1000:6.0f} ms   "
        f"p95 {p95 * 1000:6.0f} ms   max {worst * 1000:6.0f} ms"
    )


def start(command: list[str], executor: str) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "FASTFLOW_EXECUTOR": executor},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--pipelines", type=int, default=4)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--executor", default="docker")
    args = parser.parse_args()
    for n in range(args.pipelines):
        write_pipeline(f"every5_{n}", {"schedule_interval_seconds": 5})
    write_pipeline("hooked", {"webhook_key": WEBHOOK_KEY})

    import django

    django.setup()
    from django.core.management import call_command

    from pipelines_app.discovery import discover
    from pipelines_app.models import Schedule
    from runs_app.models import PipelineRun

    call_command("migrate", verbosity=0)
    discover()
    print(f"instance in {WORK} (SQLite, ORM broker, {args.executor} executor)")

    worker = start([sys.executable, "manage.py", "worker"], args.executor)
    port = free_port()
    web = start(
        [sys.executable, "-m", "daphne", "-p", str(port), "fastflow_site.asgi:application"],
        args.executor,
    )
    try:
        time.sleep(args.seconds)  # the schedules fire by themselves meanwhile
        Schedule.objects.update(enabled=False, next_fire_at=None)  # quiet for the webhooks
        scheduled = list(PipelineRun.objects.filter(trigger="schedule", started_at__isnull=False))
        print(f"schedules: {args.pipelines} pipelines every 5 s for {args.seconds} s")
        print(
            summary(
                "due → run queued",
                [(r.queued_at - r.scheduled_for).total_seconds() for r in scheduled],
            )
        )
        print(
            summary(
                "due → container started",
                [(r.started_at - r.scheduled_for).total_seconds() for r in scheduled],
            )
        )
        missed = len(scheduled) - len({(r.pipeline_id, r.scheduled_for) for r in scheduled})
        print(f"  due times fired twice: {missed}")

        wait_until_answering(port)
        answers, started = [], []
        for _ in range(args.calls):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/hooks/hooked/",
                data=b'{"SOURCE": "bench"}',
                headers={"X-Fastflow-Key": WEBHOOK_KEY, "Content-Type": "application/json"},
                method="POST",
            )
            began = time.time()
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http only
                run_id = json.load(response)["run_id"]
            answers.append(time.time() - began)
            run = wait_started(PipelineRun, run_id)
            started.append(run.started_at.timestamp() - began)
            wait_final(PipelineRun, run_id)
        print(f"webhooks: {args.calls} calls one after another")
        print(summary("POST → 202 answer", answers))
        print(summary("POST → container started", started))
    finally:
        stop(web)
        stop(worker)


def wait_started(model, run_id: str):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = model.objects.get(public_id=run_id)
        if run.started_at:
            return run
        time.sleep(0.005)
    raise SystemExit(f"run {run_id} did not start")


def wait_final(model, run_id: str) -> None:
    deadline = time.monotonic() + 60
    while model.objects.filter(public_id=run_id, status__in=model.ACTIVE_STATUSES).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} did not finish")
        time.sleep(0.01)


if __name__ == "__main__":
    main()
