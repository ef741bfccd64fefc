"""Push to deploy: push webhook → new code runnable, and the setup time of a warm run.

    uv run python bench/git_deploy.py [--pushes 5] [--runs 10] [--executor docker]

A throw-away instance (SQLite in a temp folder) with a real worker and daphne, deploying
from a bare git repository on disk. The pipeline needs pandas and requests.

1. First sync (`manage.py sync`) and the dependency warm-up it starts (timed).
2. `--pushes` times: commit a new version, POST GitHub's signed push event to /git/push/,
   and time until the new commit is live (synced, discovered: a run started now runs it).
3. `--runs` runs of the pipeline one after another: their setup duration (container start
   → the pipeline's code starts: its own environment linked from the read-only cache).
   Target: under 1 s.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
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

WORK = Path(tempfile.mkdtemp(prefix="fastflow-bench-deploy-"))
PUSH_SECRET = "bench-push-secret"  # noqa: S105 - a throw-away instance
os.environ.update(
    {
        "DATA_DIR": str(WORK / "data"),
        "LOGS_DIR": str(WORK / "logs"),
        "GIT_REPO_URL": str(WORK / "remote.git"),
        "GIT_BRANCH": "main",
        "GIT_WEBHOOK_SECRET": PUSH_SECRET,
        "LOG_LEVEL": "WARNING",
    }
)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")
MAIN = "import pandas, requests\nprint('version {n}', pandas.__version__, requests.__version__)\n"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(work: Path, n: int) -> str:
    (work / "deps" / "main.py").write_text(MAIN.format(n=n))
    git("add", "-A", cwd=work)
    git("commit", "-m", f"version {n}", cwd=work)
    git("push", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def summary(label: str, seconds: list[float]) -> str:
    p50, p95, worst = percentiles(seconds)
    return (
        f"  {label:<40} n={len(seconds):<3} p50 {p50:6.2f} s   "
        f"p95 {p95:6.2f} s   max {worst:6.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--executor", default="docker")
    args = parser.parse_args()
    os.environ["FASTFLOW_EXECUTOR"] = args.executor
    work = WORK / "author"
    git("init", "--bare", "--initial-branch=main", str(WORK / "remote.git"), cwd=WORK)
    git("clone", str(WORK / "remote.git"), str(work), cwd=WORK)
    git("config", "user.email", "bench@example.com", cwd=work)
    git("config", "user.name", "Bench", cwd=work)
    git("checkout", "-B", "main", cwd=work)
    (work / "deps").mkdir()
    (work / "deps" / "requirements.txt").write_text("pandas\nrequests\n")
    commit(work, 0)

    import django

    django.setup()
    from django.core.management import call_command

    from pipelines_app.gitsync import live_commit
    from pipelines_app.models import Pipeline
    from runs_app.models import PipelineRun

    call_command("migrate", verbosity=0)
    print(f"instance in {WORK} ({args.executor} executor)")
    processes = []
    try:
        processes.append(start([sys.executable, "manage.py", "worker"]))
        port = free_port()
        processes.append(
            start(
                [sys.executable, "-m", "daphne", "-p", str(port), "fastflow_site.asgi:application"]
            )
        )
        began = time.monotonic()
        call_command("sync", stdout=open(os.devnull, "w"))  # noqa: SIM115
        deps = Pipeline.objects.get(name="deps")
        while deps.warm_status not in ("ready", "failed"):
            time.sleep(0.2)
            deps.refresh_from_db()
        print(
            f"first sync + warm-up (pandas, requests): {time.monotonic() - began:.1f} s, "
            f"warm-up {deps.warm_status} in {deps.warm_duration.total_seconds():.1f} s"
        )
        wait_until_answering(port)
        deploys = []
        for n in range(1, args.pushes + 1):
            sha = commit(work, n)
            body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
            signature = "sha256=" + hmac.new(PUSH_SECRET.encode(), body, hashlib.sha256).hexdigest()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/git/push/",
                data=body,
                method="POST",
                headers={
                    "X-Hub-Signature-256": signature,
                    "X-GitHub-Event": "push",
                    "Content-Type": "application/json",
                },
            )
            began = time.monotonic()
            urllib.request.urlopen(request, timeout=30).close()  # noqa: S310
            while live_commit() != sha:
                if time.monotonic() - began > 120:
                    raise SystemExit(f"push {n} was not deployed in 2 minutes")
                time.sleep(0.02)
            deploys.append(time.monotonic() - began)
        print(summary("push webhook → new commit live", deploys))
        setups = []
        for _ in range(args.runs):
            run = PipelineRun.enqueue(Pipeline.objects.get(name="deps"), trigger="api")
            while not PipelineRun.objects.get(pk=run.pk).is_finished:
                time.sleep(0.05)
            run.refresh_from_db()
            if run.status != "succeeded" or run.setup_duration is None:
                raise SystemExit(f"run {run.public_id} {run.status}: {run.error_message}")
            setups.append(run.setup_duration.total_seconds())
        print(summary("warm run setup (pandas + requests)", setups))
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=os.environ.copy(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    main()
