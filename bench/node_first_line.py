"""Trigger → first line on a cold and on a warm worker node (a pipeline with requirements).

    createdb -h 127.0.0.1 -U postgres fastflow_nodes
    DATABASE_URL=postgres://postgres@127.0.0.1/fastflow_nodes \
        uv run python bench/node_first_line.py

An instance on an empty PostgreSQL database of the bench's own (its wake-ups cross
"machines"; SQLite's go through a folder nodes do not share); two worker nodes started one
after the other as real `manage.py worker` processes, each with its own DATA_DIR, LOGS_DIR and an
empty uv cache of its own. On node-a the first run resolves and downloads its requirements
(the warm-up: a cold instance); then --runs warm runs. On node-b the lock node-a made is not
in its cache: its first run installs exactly that lock first (a cold node); then warm runs.
Measured from `PipelineRun.enqueue` until the first output line is stored in the database.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-nodes-"))
os.environ.update(
    # Several nodes: the keys come from the environment (each node would make its own).
    SECRET_KEY=base64.urlsafe_b64encode(os.urandom(40)).decode(),
    ENCRYPTION_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode(),
    DATA_DIR=str(WORK / "discovering-node"),
    LOGS_DIR=str(WORK / "discovering-node-logs"),
    PIPELINES_DIR=str(WORK / "pipelines"),
    UV_PRE_HEAT="false",  # nodes warm when a run needs it
    LOG_LEVEL="WARNING",
)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")
folder = WORK / "pipelines" / "deps"
folder.mkdir(parents=True)
(folder / "main.py").write_text("import six\nprint('first line', six.__version__)\n")
(folder / "requirements.txt").write_text("six==1.16.0\n")

import django

django.setup()

from django.core.management import call_command

from bench.common import percentiles, start_worker, stop_worker
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun
from runs_app.stored_logs import log_text

call_command("migrate", verbosity=0)
discover()


def first_line_after(began: float, run: PipelineRun) -> float:
    deadline = began + 300
    while time.monotonic() < deadline:
        if " O first line" in log_text(run.pk):
            return time.monotonic() - began
        time.sleep(0.005)
    raise SystemExit(f"no output from run {run.public_id}:\n{log_text(run.pk)}")


def until_final(run: PipelineRun) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_finished:
            if run.status != PipelineRun.Status.SUCCEEDED:
                raise SystemExit(f"run {run.public_id} {run.status}:\n{log_text(run.pk)}")
            return
        time.sleep(0.02)
    raise SystemExit(f"run {run.public_id} did not end")


def node(name: str, runs: int) -> None:
    for folder_name in ("data", "logs", "cache"):
        (WORK / name / folder_name).mkdir(parents=True)
    os.environ.update(
        WORKER_NAME=name,
        DATA_DIR=str(WORK / name / "data"),
        LOGS_DIR=str(WORK / name / "logs"),
        UV_CACHE_DIR=str(WORK / name / "cache"),
    )
    worker = start_worker("docker", None, "--tick", "0.5")
    pipeline = Pipeline.objects.get(name="deps")
    try:
        began = time.monotonic()
        cold = PipelineRun.enqueue(pipeline, trigger="api")
        cold_seconds = first_line_after(began, cold)
        until_final(cold)
        said = [
            text
            for text in log_text(cold.pk).splitlines()
            if "warm-up" in text or "does not hold its packages" in text
        ]
        samples = []
        for _ in range(runs):
            began = time.monotonic()
            run = PipelineRun.enqueue(pipeline, trigger="api")
            samples.append(first_line_after(began, run))
            until_final(run)
        p50, p95, _ = percentiles(samples)
        print(
            f"  {name}: cold {cold_seconds * 1000:7.0f} ms  (its log: {said[0].split(' S ')[-1]})"
        )
        print(f"  {name}: warm p50 {p50 * 1000:7.0f} ms   p95 {p95 * 1000:7.0f} ms   ({runs} runs)")
    finally:
        stop_worker(worker)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if "postgres" not in os.environ.get("DATABASE_URL", ""):
        raise SystemExit("set DATABASE_URL to an empty PostgreSQL database of the bench's own")
    print(f"instance in {WORK} (PostgreSQL); trigger → first line stored, docker executor")
    node("node-a", args.runs)
    node("node-b", args.runs)


if __name__ == "__main__":
    main()
