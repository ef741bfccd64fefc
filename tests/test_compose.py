"""The compose stack for real: the documented deployment commands (docs/operating.md), run
as written (with the images CI builds without a registry), bring up web, worker, PostgreSQL
and the engine guard; a person signs in and runs hello_world, which the worker starts
through the guard; then the stack goes down."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from tests.runs_app.conftest import free_port, require

BASE_DIR = Path(settings.BASE_DIR)
IMAGES = ("fastflow-app:offline", "fastflow-postgres:offline", settings.WORKER_IMAGE)


def deployment_commands() -> str:
    """The bash block of "Deploying with Docker Compose" (docs/operating.md)."""
    readme = (BASE_DIR / "docs" / "operating.md").read_text()
    section = readme.split("## Deploying with Docker Compose", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def shims(folder: Path) -> Path:
    """`sudo` (CI is root) and `docker compose` on a machine with docker-compose 1.x."""
    folder.mkdir()
    for name, script in {
        "sudo": '#!/bin/sh\nexec "$@"\n',
        "docker": '#!/bin/sh\nif [ "$1" = compose ]; then shift; exec docker-compose "$@"; fi\n'
        f'exec {shutil.which("docker")} "$@"\n',
    }.items():
        (folder / name).write_text(script)
        (folder / name).chmod(0o755)
    return folder


def images_present() -> bool:
    return all(
        subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
        for image in IMAGES
    )


@pytest.fixture
def stack(tmp_path):
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.skip("the SQLite pass runs this (the stack brings its own PostgreSQL)")
    require(
        shutil.which("docker-compose") is not None,
        "docker-compose (apt-get install docker-compose)",
    )
    require(images_present(), f"the images {', '.join(IMAGES)} (.ci/compose/build-images.sh)")
    home = Path(tempfile.mkdtemp(prefix="fastflow-compose-", dir="/tmp"))  # world-traversable
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY",
                                                           "ENCRYPTION_KEY", "DOCKER_HOST")},
        "PATH": f"{shims(tmp_path / 'bin')}:{os.environ['PATH']}",
        "FASTFLOW_HOME": str(home),
        "FASTFLOW_PORT": str(port),
        "COMPOSE_FILE": "docker-compose.yml:.ci/compose/offline.yml",
        "COMPOSE_PROJECT_NAME": f"fastflowtest{port}",
    }  # fmt: skip
    began = time.monotonic()
    script = "set -euo pipefail\n" + deployment_commands().replace("/srv/fastflow", str(home))
    done = subprocess.run(["bash", "-c", script], cwd=BASE_DIR, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield home, f"http://127.0.0.1:{port}", began, env
    finally:
        logs = subprocess.run(["docker-compose", "logs", "--no-color", "--tail", "60"],
                              cwd=BASE_DIR, env=env, capture_output=True, text=True)  # fmt: skip
        (tmp_path / "compose.log").write_text(logs.stdout + logs.stderr)
        subprocess.run(["docker-compose", "down", "-v", "--timeout", "5"], cwd=BASE_DIR, env=env,
                       capture_output=True, timeout=120)  # fmt: skip
        subprocess.run(["rm", "-rf", str(home)], check=False)


def wait_for(url: str, opener, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return opener.open(url, timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_the_readme_deployment_brings_up_a_stack_that_runs_a_pipeline(stack, tmp_path):
    home, base, began, env = stack
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    try:
        wait_for(f"{base}/health/", opener, timeout=240)
        page = opener.open(f"{base}/accounts/login/").read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        password = (home / "data" / "initial-admin-password.txt").read_text().strip()
        form = urllib.parse.urlencode(
            {"login": "admin", "password": password, "csrfmiddlewaretoken": token}
        ).encode()
        signed_in = opener.open(urllib.request.Request(f"{base}/accounts/login/", data=form))
        assert signed_in.url == f"{base}/"
        (tmp_path / "seconds-to-signed-in.txt").write_text(f"{time.monotonic() - began:.1f}\n")
        print(f"docker compose up → signed in: {time.monotonic() - began:.1f} s")
        assert 'id="overview-hello_world"' in signed_in.read().decode()
        assert stat.S_IMODE((home / "data" / "instance-keys.json").stat().st_mode) == 0o600

        token = next(c.value for c in jar if c.name == "csrftoken")
        started = opener.open(
            urllib.request.Request(
                f"{base}/runs/start/hello_world/",
                data=urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode(),
            )
        )
        run_id = started.url.rstrip("/").rsplit("/", 1)[-1]
        deadline = time.monotonic() + 180
        status = ""
        while time.monotonic() < deadline and status not in ("succeeded", "failed"):
            status = json.load(opener.open(f"{base}/api/v1/runs/{run_id}"))["status"]
            time.sleep(1)
        log = opener.open(f"{base}/runs/{run_id}/log/").read().decode()
        assert status == "succeeded", log
        assert "Hello" in log or "hello" in log
    finally:
        guard = subprocess.run(["docker-compose", "logs", "--no-color", "engine-guard"],
                               cwd=BASE_DIR, env=env, capture_output=True, text=True)  # fmt: skip
    assert "passed POST /containers/create" in guard.stdout  # the run went through the guard
