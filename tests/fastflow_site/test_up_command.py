"""The README's first command: a fresh instance with the demo pipelines, reachable in a browser."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from fastflow_site.management.commands.up import Command
from pipelines_app.models import Pipeline
from runs_app.executors.sandbox import executor as sandbox_executor
from tests.runs_app.conftest import docker_engine, free_port  # noqa: F401 - a fixture

BASE_DIR = Path(settings.BASE_DIR)


def wait_for(url: str, process: subprocess.Popen, deadline_seconds: float = 60) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"up exited early:\n{process.stdout.read()}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {deadline_seconds} s")


@pytest.mark.django_db
def test_prepare_installs_the_demo_once_and_creates_one_admin(tmp_path, settings):
    settings.PIPELINES_DIR = tmp_path / "pipelines"
    settings.DATA_DIR = tmp_path
    out = StringIO()
    call_command("up", "--demo", "--prepare-only", stdout=out)
    password = (tmp_path / "initial-admin-password.txt").read_text().strip()
    assert f"Log in as admin with the password {password}" in out.getvalue()
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert Pipeline.objects.count() == 8
    assert oct((tmp_path / "initial-admin-password.txt").stat().st_mode & 0o777) == "0o600"

    (settings.PIPELINES_DIR / "hello_world" / "main.py").write_text("print('mine')\n")
    again = StringIO()
    call_command("up", "--demo", "--prepare-only", stdout=again)
    assert password not in again.getvalue()  # printed once, on the start that made it
    assert "first password was printed on the first start" in again.getvalue()
    assert (settings.PIPELINES_DIR / "hello_world" / "main.py").read_text() == "print('mine')\n"
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_with_a_repository_up_deploys_it_instead_of_the_demo(tmp_path, settings):
    from tests.pipelines_app.test_gitsync import Remote

    settings.PIPELINES_DIR = tmp_path / "pipelines"
    settings.DATA_DIR = tmp_path / "data"
    settings.GIT_REPO_URL = str(tmp_path / "remote.git")
    remote = Remote(tmp_path)
    head = remote.commit({"from_git/main.py": "print(1)\n"}, "first")
    out = StringIO()
    call_command("up", "--demo", "--prepare-only", stdout=out)
    assert f"synced main at {head[:12]}" in out.getvalue()
    assert list(Pipeline.objects.values_list("name", flat=True)) == ["from_git"]
    assert not settings.PIPELINES_DIR.exists()  # the demo was not copied anywhere


@pytest.mark.slow
def test_a_newcomer_logs_in_sees_the_demo_pipelines_and_runs_one(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "PIPELINES_DIR": str(tmp_path / "pipelines"),
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "up", "--demo", "--port", str(port)],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/accounts/login/", process)
        password = (tmp_path / "data" / "initial-admin-password.txt").read_text().strip()
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        first = opener.open(f"{base}/")  # anonymous: sent to the login page
        assert first.url == f"{base}/accounts/login/?next=/"
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', first.read().decode())[1]
        form = urllib.parse.urlencode(
            {
                "login": "admin",
                "password": password,
                "csrfmiddlewaretoken": token,
                "next": "/",
            }
        ).encode()
        request = urllib.request.Request(
            f"{base}/accounts/login/", data=form, headers={"Referer": base}
        )
        page = opener.open(request)
        assert page.url == f"{base}/"  # the dashboard
        assert 'id="overview-hello_world"' in page.read().decode()
        html = opener.open(f"{base}/pipelines/").read().decode()
        for name in (
            "hello_world",
            "with_requirements",
            "always_fails",
            "slow_counter",
            "print_env",
            "memory_hog",
            "shop_models",
        ):
            assert f'id="pipeline-{name}"' in html
        assert "pipeline.json: mem_hard_limit &#x27;1.5x&#x27; is not a size" in html
        css = opener.open(f"{base}/static/css/fastflow.css")
        assert css.status == 200

        # The demo pipelines actually run: the run button, then the run succeeds.
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)[1]
        run = urllib.request.Request(
            f"{base}/runs/start/hello_world/",
            data=urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode(),
            headers={"Referer": base},
        )
        assert "Run " in opener.open(run).read().decode()
        deadline = time.monotonic() + 90
        detail = ""
        while time.monotonic() < deadline and "✔ succeeded" not in detail:
            detail = opener.open(f"{base}/pipelines/hello_world/").read().decode()
            time.sleep(0.3)
        assert "✔ succeeded" in detail

        # The demo models pipeline (dbt on DuckDB): its run builds every model, and the
        # pipeline page then draws them and links the generated docs.
        run = urllib.request.Request(
            f"{base}/runs/start/shop_models/",
            data=urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode(),
            headers={"Referer": base},
        )
        opener.open(run).read()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and 'id="models-docs"' not in detail:
            detail = opener.open(f"{base}/pipelines/shop_models/").read().decode()
            time.sleep(0.5)
        assert 'id="models-docs"' in detail, detail
        assert 'data-node="model.shop.customer_revenue"' in detail
        docs = opener.open(f"{base}/pipelines/shop_models/docs/")
        assert "sandbox" in docs.headers["Content-Security-Policy"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert process.returncode == 0


def test_without_an_engine_production_does_not_start_and_nothing_falls_back(
    settings, monkeypatch, tmp_path
):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    settings.FASTFLOW_EXECUTOR = "docker"
    settings.DEBUG = False
    command = Command(stdout=StringIO())
    with pytest.raises(CommandError, match="No Docker engine is reachable"):
        command.prepare_executor()
    # In development it starts, says why runs will wait, and still runs no local processes.
    settings.DEBUG = True
    out = StringIO()
    Command(stdout=out).prepare_executor()
    assert "Runs wait in the queue until it is" in out.getvalue()
    assert "FASTFLOW_EXECUTOR=local" in out.getvalue()


@pytest.mark.usefixtures("docker_engine")
def test_the_sandbox_executor_says_what_it_lacks_before_starting(settings, monkeypatch):
    settings.FASTFLOW_EXECUTOR, settings.DEBUG = "sandbox", False
    monkeypatch.setenv("PATH", "/nowhere")  # no bubblewrap on it
    sandbox_executor._tool.cache_clear()
    try:
        with pytest.raises(CommandError, match="bubblewrap is not installed"):
            Command(stdout=StringIO()).prepare_executor()
    finally:
        sandbox_executor._tool.cache_clear()
