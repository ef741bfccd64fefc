"""Helpers the bench scripts share: ports, waiting for a server, percentiles, Chromium."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Issue 15's tiny run: computes fib(10) and prints it.
FIB_MAIN = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nprint(fib(10))\n"

# Debian's Chromium, headless, without its background traffic (ENVIRONMENT.md).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def sign_in(page, base: str, then: str, user: str = "bench", password: str = "") -> None:
    """Sign `page` in with the password form and land on `then` (a path)."""
    page.goto(f"{base}/accounts/login/?next={then}")
    page.fill("#id_login", user)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{then}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """(p50, p95, max)."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return statistics.median(ordered), p95, ordered[-1]


def print_percentiles(name: str, samples: list[float], width: int = 22) -> None:
    """One line: the name, then p50 and p95 in milliseconds."""
    p50, p95, _ = percentiles(samples)
    print(f"      {name:<{width}} p50 {p50 * 1000:6.0f} ms   p95 {p95 * 1000:6.0f} ms")


def pool_ready(data_dir: Path) -> int:
    """Running pooled containers of the instance whose DATA_DIR this is (their slots)."""
    import docker

    slots = {path.name for path in (data_dir / "pool").glob("*")}
    found = docker.from_env().api.containers(
        filters={"label": "fastflow.pool", "name": "^/fastflow-pool-", "status": "running"}
    )
    return sum(c["Labels"].get("fastflow.pool.slot") in slots for c in found)


def wait_for_pool(data_dir: Path, size: int, timeout: float = 120) -> None:
    """Until the instance's pool is full (measurements start from an idle instance)."""
    deadline = time.monotonic() + timeout
    while pool_ready(data_dir) < size:
        if time.monotonic() > deadline:
            raise SystemExit(f"the pool did not fill to {size} in {timeout:.0f} s")
        time.sleep(0.1)


def start_worker(executor: str, pool: int | None = None, *options: str) -> subprocess.Popen:
    """`manage.py worker [options]` of the bench's instance (its settings are in os.environ),
    in a process group of its own; `pool` sets RUN_POOL_SIZE (None: the instance's)."""
    env = {**os.environ, "FASTFLOW_EXECUTOR": executor}
    if pool is not None:
        env["RUN_POOL_SIZE"] = str(pool)
    return subprocess.Popen(
        [sys.executable, "manage.py", "worker", *options],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_worker(worker: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM to the worker's process group, as Ctrl-C would; wait until it is gone."""
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=timeout)


def throwaway_instance(
    work: Path, pipelines: dict[str, str], *, flush: bool = False, **settings: str
) -> None:
    """Make `work` an instance (its data, logs and pipelines folders; these pipelines' main.py;
    `settings` as environment variables), set Django up on it, migrate and discover.
    `flush`: the database is the bench's own (a PostgreSQL one it names): emptied first."""
    os.environ.update(
        DATA_DIR=str(work / "data"),
        LOGS_DIR=str(work / "logs"),
        PIPELINES_DIR=str(work / "pipelines"),
        LOG_LEVEL="WARNING",
        **settings,
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastflow_site.settings")
    for name, main in pipelines.items():
        (work / "pipelines" / name).mkdir(parents=True)
        (work / "pipelines" / name / "main.py").write_text(main)
    import django

    django.setup()
    from django.core.management import call_command

    from pipelines_app.discovery import discover

    call_command("migrate", verbosity=0)
    if flush:
        call_command("flush", interactive=False, verbosity=0)
    discover()
