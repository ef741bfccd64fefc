"""Issue 15's memory goals: what `manage.py up` holds idle (RSS and PSS summed over all its
processes), and what each additional running run costs the orchestrator (its processes
only: the run's container is the engine's).

    uv run python bench/memory.py                   # docker, 10 runs sleeping at once
    uv run python bench/memory.py --runs 5 --executor local

RSS counts pages shared between processes (django-q2 forks its cluster) once per process;
PSS divides them among their sharers. The goal is written in RSS.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-memory-"))
parser = argparse.ArgumentParser()
parser.add_argument("--executor", default="docker", choices=["docker", "local"])
parser.add_argument("--runs", type=int, default=10)
args = parser.parse_args()
os.environ.update(
    DATA_DIR=str(WORK / "data"),
    LOGS_DIR=str(WORK / "logs"),
    PIPELINES_DIR=str(WORK / "pipelines"),
    DATABASE_URL=f"sqlite:///{WORK / 'db.sqlite3'}",
    FASTFLOW_EXECUTOR=args.executor,
    MAX_CONCURRENT_RUNS=str(max(args.runs, 10)),
    LOG_LEVEL="WARNING",
)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")
(WORK / "pipelines" / "nap").mkdir(parents=True)
(WORK / "pipelines" / "nap" / "main.py").write_text(
    "import time\nprint('napping', flush=True)\ntime.sleep(600)\n"
)

import django

django.setup()

from bench.common import free_port, wait_until_answering
from pipelines_app.models import Pipeline
from runs_app.follow import wait_for
from runs_app.management.commands.worker import descendants
from runs_app.models import PipelineRun, WorkerProcess


def log_text(run_id: int) -> str:
    """A run's stored log (runs_app.stored_logs; imported once Django is set up)."""
    from runs_app.stored_logs import log_text as stored

    return stored(run_id)


def memory(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in bytes, summed."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    name, _, value = line.partition(":")
                    if name == "Rss":
                        rss += int(value.split()[0]) * 1024
                    elif name == "Pss":
                        pss += int(value.split()[0]) * 1024
        except OSError:
            continue
    return rss, pss


def settled(root: int) -> tuple[int, int, int]:
    """Processes and memory once nothing has started or ended for a second."""
    previous, steady_since = None, time.monotonic()
    while time.monotonic() - steady_since < 1.0:
        current = sorted([root, *descendants(root)])
        if current != previous:
            previous, steady_since = current, time.monotonic()
        time.sleep(0.1)
    rss, pss = memory(previous)
    return len(previous), rss, pss


def mb(value: float) -> str:
    return f"{value / 1024**2:6.1f} MB"


def main() -> None:
    port = free_port()
    up = subprocess.Popen(
        [sys.executable, "manage.py", "up", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "RUN_POOL_SIZE": os.environ.get("RUN_POOL_SIZE", "2")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_answering(port, timeout=120)
        assert wait_for(lambda: WorkerProcess.objects.exists(), timeout=60), "no worker"
        count, rss, pss = settled(up.pid)
        print(f"instance in {WORK} (SQLite, {args.executor})")
        for pid in sorted([up.pid, *descendants(up.pid)]):
            with open(f"/proc/{pid}/cmdline") as cmdline:
                command = cmdline.read().replace("\0", " ")[:60]
            one_rss, one_pss = memory([pid])
            print(f"    {pid:>7} RSS {mb(one_rss)} PSS {mb(one_pss)}  {command}")
        print(f"  idle `up`: {count} processes, RSS {mb(rss)}, PSS {mb(pss)}")
        pipeline = Pipeline.objects.get(name="nap")
        runs = [PipelineRun.enqueue(pipeline, trigger="api") for _ in range(args.runs)]
        assert wait_for(
            lambda: all("napping" in log_text(run.pk) for run in runs),
            timeout=180,
        ), "the runs did not all start"
        count_busy, rss_busy, pss_busy = settled(up.pid)
        print(
            f"  {args.runs} runs running: {count_busy} processes, RSS {mb(rss_busy)}, "
            f"PSS {mb(pss_busy)}"
        )
        print(
            f"  each running run: RSS {mb((rss_busy - rss) / args.runs)}, "
            f"PSS {mb((pss_busy - pss) / args.runs)} in the orchestrator"
        )
        for run in runs:
            run.request_cancel()
        wait_for(lambda: not PipelineRun.objects.filter(status__in=["running"]).exists(), 60)
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=60)


if __name__ == "__main__":
    main()
