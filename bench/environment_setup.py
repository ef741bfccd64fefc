"""Issue 23's shape: how long a run's environment takes to set up once its warm-up is done —
the run installs its lock, offline, linked from the shared cache — for pandas + requests
(requirements.txt) and for a locked uv project of about 40 packages, through a real
`manage.py worker`, in pooled and in fresh containers, and in sandboxes.

    uv run python bench/environment_setup.py [--runs 20] [--pool 2 0] [--sandbox | --no-sandbox]

"Setup" is the run's own record (setup_duration): its container started → its code
started; the install of the lock is all of it but starting Python. Printed per pipeline and
pool size: p50 and p95.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (
    print_percentiles,
    start_worker,
    stop_worker,
    throwaway_instance,
    wait_for_pool,
)

WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-environment-"))
PANDAS = "import pandas, requests\nprint(pandas.__version__, requests.__version__)\n"
PROJECT = "import pandas, sqlalchemy, pydantic, httpx, rich\nprint('ready')\n"
PROJECT_DEPENDENCIES = [
    "requests", "pandas", "sqlalchemy", "pydantic", "httpx", "rich", "jinja2", "click",
    "python-dateutil", "tabulate", "pyyaml", "attrs", "tenacity", "structlog", "orjson",
    "boto3", "sqlparse", "more-itertools", "cachetools", "platformdirs",
]  # fmt: skip
throwaway_instance(
    WORK, {"pandas_requests": PANDAS, "locked_project": PROJECT}, MAX_CONCURRENT_RUNS="1"
)
(WORK / "pipelines" / "pandas_requests" / "requirements.txt").write_text("pandas\nrequests\n")
project = WORK / "pipelines" / "locked_project"
(project / "pyproject.toml").write_text(
    '[project]\nname = "locked-project"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
    f"dependencies = {PROJECT_DEPENDENCIES!r}\n".replace("'", '"')
)
from uv import find_uv_bin

subprocess.run([find_uv_bin(), "lock", "--quiet"], cwd=project, check=True)

from django.core.management import call_command

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import EnvironmentLock, PipelineRun


def setups(name: str, runs: int) -> list[float]:
    pipeline = Pipeline.objects.get(name=name)
    found = []
    for _ in range(runs):
        run = PipelineRun.enqueue(pipeline, trigger="api")
        deadline = time.monotonic() + 120
        while not PipelineRun.objects.filter(pk=run.pk, status__in=PipelineRun.FINAL_STATUSES):
            if time.monotonic() > deadline:
                raise SystemExit(f"a run of {name} did not end in time")
            time.sleep(0.01)
        run.refresh_from_db()
        if run.status != PipelineRun.Status.SUCCEEDED:
            raise SystemExit(f"a run of {name} {run.status}: {run.error_message}")
        found.append(run.setup_duration.total_seconds())
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pool", type=int, nargs="+", default=[2, 0])
    parser.add_argument("--sandbox", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    discover()
    began = time.monotonic()
    call_command("warm", verbosity=0)
    print(f"instance in {WORK}; both warmed in {time.monotonic() - began:.1f} s")
    for name in ("pandas_requests", "locked_project"):
        lock = EnvironmentLock.current(Pipeline.objects.get(name=name))
        print(f"  {name}: {len(lock.packages)} packages in its lock {lock.short_hash}")
    measured = [("docker", pool) for pool in args.pool]
    if args.sandbox:
        measured.append(("sandbox", 0))
    for executor, pool in measured:
        worker = start_worker(executor, pool)
        try:
            if pool:
                wait_for_pool(WORK / "data", pool)
            where = "sandbox" if executor == "sandbox" else f"container, RUN_POOL_SIZE={pool}"
            print(f"setup ({where} started → code started):")
            for name in ("pandas_requests", "locked_project"):
                print_percentiles(name, setups(name, args.runs))
        finally:
            stop_worker(worker)


if __name__ == "__main__":
    main()
