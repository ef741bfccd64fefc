"""Chaining: from an upstream run's end to its downstream run's first log line.

    uv run python bench/chain_latency.py [--chains 20] [--executor docker]

A throw-away instance (SQLite in a temp folder, ORM broker) with a real `manage.py worker`.
`extract` prints a line and ends; its `downstream_triggers` start `load`, which prints one.
Delay = `load`'s first output line (the container's own timestamp) - `extract`'s end (the
engine's finish time). The chains run one after another.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import percentiles, start_worker, stop_worker

WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-chain-"))
os.environ.update(
    {
        "DATA_DIR": str(WORK / "data"),
        "LOGS_DIR": str(WORK / "logs"),
        "PIPELINES_DIR": str(WORK / "pipelines"),
        "LOG_LEVEL": "WARNING",
    }
)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")


def write_pipeline(name: str, main: str, config: dict) -> None:
    folder = WORK / "pipelines" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(main)
    (folder / "pipeline.json").write_text(json.dumps(config))


def first_output_time(run_id: int) -> datetime | None:
    from runs_app.stored_logs import log_text

    lines = log_text(run_id).split("\n")[:-1]
    for line in lines:
        stamp, stream, _ = line.split(" ", 2)
        if stream == "O":
            return datetime.fromisoformat(stamp[:26] + "+00:00")
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chains", type=int, default=20)
    parser.add_argument("--executor", default="docker")
    args = parser.parse_args()
    write_pipeline(
        "extract", "print('extracted')\n", {"downstream_triggers": [{"pipeline": "load"}]}
    )
    write_pipeline("load", "print('loaded')\n", {})

    import django

    django.setup()
    from django.core.management import call_command

    from pipelines_app.discovery import discover
    from pipelines_app.models import Pipeline
    from runs_app.models import PipelineRun

    call_command("migrate", verbosity=0)
    discover()
    worker = start_worker(args.executor)
    delays = []
    try:
        extract = Pipeline.objects.get(name="extract")
        for _ in range(args.chains):
            upstream = PipelineRun.enqueue(extract, trigger="api")
            deadline = time.monotonic() + 120
            while True:
                upstream.refresh_from_db()
                link = upstream.chain_links.select_related("downstream").first()
                shown = first_output_time(link.downstream.pk) if link else None
                if shown is not None and upstream.finished_at:
                    delays.append((shown - upstream.finished_at).total_seconds())
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("a chain did not complete in 120 s")
                time.sleep(0.005)
            while PipelineRun.objects.filter(status__in=PipelineRun.ACTIVE_STATUSES).exists():
                time.sleep(0.01)
    finally:
        stop_worker(worker)
    p50, p95, worst = percentiles(delays)
    print(
        f"{args.executor}: {len(delays)} chains, upstream ended → downstream's first log line: "
        f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
