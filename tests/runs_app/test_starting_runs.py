"""Ways to start and stop runs: the run button, admin actions, manage.py commands."""

from __future__ import annotations

import subprocess
import sys
import threading
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.urls import reverse

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.follow import wait_for
from runs_app.models import PipelineRun
from secrets_app.models import Variable
from tests.runs_app.conftest import log_text
from tests.runs_app.test_worker import Worker

Status = PipelineRun.Status


@pytest.fixture
def catalogue(make_pipeline, settings, tmp_path):
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0  # nothing starts: these tests look at the queue
    make_pipeline("hello")
    make_pipeline("paused", config={"enabled": False})
    make_pipeline("broken", config={"timeout": "x"})
    discover()
    stored = Variable(name="API_TOKEN", kind=Variable.Kind.SECRET)
    stored.set_value("stored secret")
    stored.save()


@pytest.mark.django_db
def test_the_run_button_queues_a_manual_run(operator_client, catalogue, operator):
    response = operator_client.post(reverse("runs_app:start", args=["hello"]), follow=True)
    run = PipelineRun.objects.get()
    assert run.status == Status.QUEUED
    assert run.trigger == PipelineRun.Trigger.MANUAL and run.triggered_by == operator
    html = response.content.decode()
    assert f"Run {run.short_id} of hello queued." in html
    assert response.redirect_chain[-1][0] == f"/runs/{run.public_id}/"  # watch it run
    assert 'id="live-log"' in html


@pytest.mark.django_db
def test_the_run_button_is_shown_to_people_who_may_run(operator_client, catalogue):
    assert 'action="/runs/start/hello/"' in operator_client.get("/pipelines/").content.decode()


@pytest.mark.django_db
def test_people_without_the_permission_cannot_run(viewer_client, catalogue):
    assert 'action="/runs/start/hello/"' not in viewer_client.get("/pipelines/").content.decode()
    response = viewer_client.post(reverse("runs_app:start", args=["hello"]))
    assert response.status_code == 403
    assert not PipelineRun.objects.exists()


@pytest.mark.django_db
def test_running_a_disabled_pipeline_asks_for_confirmation(operator_client, catalogue):
    url = reverse("runs_app:start", args=["paused"])
    response = operator_client.post(url, follow=True)
    html = response.content.decode()
    assert not PipelineRun.objects.exists()
    assert "paused is disabled in its pipeline.json; confirm below" in html
    assert "Run anyway" in html
    operator_client.post(url, {"confirm_disabled": "yes"})
    assert PipelineRun.objects.get().pipeline.name == "paused"


@pytest.mark.django_db
def test_an_invalid_pipeline_is_refused_with_its_errors(operator_client, catalogue):
    response = operator_client.post(reverse("runs_app:start", args=["broken"]), follow=True)
    assert "broken cannot run until its configuration is fixed" in response.content.decode()
    assert not PipelineRun.objects.exists()


@pytest.mark.django_db
def test_run_button_needs_post(operator_client, catalogue):
    assert operator_client.get(reverse("runs_app:start", args=["hello"])).status_code == 405


@pytest.mark.django_db
def test_admin_actions_run_cancel_rerun(admin_client, catalogue):
    hello = Pipeline.objects.get(name="hello")
    admin_client.post(
        reverse("admin:pipelines_app_pipeline_changelist"),
        {"action": "run_now", "_selected_action": [hello.pk]},
    )
    run = PipelineRun.objects.get()
    assert run.trigger == PipelineRun.Trigger.MANUAL
    changelist = reverse("admin:runs_app_pipelinerun_changelist")
    admin_client.post(changelist, {"action": "cancel_runs", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    admin_client.post(changelist, {"action": "rerun", "_selected_action": [run.pk]})
    assert PipelineRun.objects.filter(status=Status.QUEUED).count() == 1


@pytest.mark.django_db
def test_runpipeline_queues_with_values(catalogue):
    out = StringIO()
    call_command("runpipeline", "hello", "-e", "A=1", "-e", "B=x=y", stdout=out)
    run = PipelineRun.objects.get()
    assert out.getvalue().strip() == f"queued run {run.public_id} of hello"
    assert run.trigger == PipelineRun.Trigger.CLI
    assert run.parameters == {"A": "1", "B": "x=y"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no pipeline called 'nope'"),
        (["hello", "-e", "NOEQUALS"], "is not KEY=VALUE"),
        (["hello", "-e", "1A=2"], "is not a variable name"),
        (["broken"], "cannot run until its configuration is fixed"),
    ],
)
def test_runpipeline_errors(catalogue, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("runpipeline", *args, stdout=StringIO())


@pytest.mark.django_db
def test_cancelrun(catalogue):
    call_command("runpipeline", "hello", stdout=StringIO())
    run = PipelineRun.objects.get()
    out = StringIO()
    call_command("cancelrun", str(run.public_id)[:8], stdout=out)
    assert out.getvalue().strip() == f"run {run.public_id} cancelled (it was queued)"
    out = StringIO()
    call_command("cancelrun", str(run.public_id), stdout=out)
    assert "had already ended (cancelled)" in out.getvalue()
    with pytest.raises(CommandError, match="no run 'zzz'"):
        call_command("cancelrun", "zzz")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
def test_runpipeline_follow_says_when_no_worker_runs(make_pipeline, settings, tmp_path):
    make_pipeline("lonely")
    discover()
    environment = Worker(settings, tmp_path).environment()
    follow = subprocess.Popen(
        [sys.executable, "manage.py", "runpipeline", "lonely", "--follow"],
        cwd=django_settings.BASE_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(follow.stderr), daemon=True)
    reader.start()
    try:
        # Within a few seconds, not silence: why nothing happens and what to do.
        assert wait_for(lambda: any("No worker is running" in line for line in said), timeout=20)
        assert any("uv run manage.py worker" in line for line in said)
        assert follow.poll() is None  # and it keeps waiting for the run
    finally:
        follow.kill()
        follow.wait()
    assert PipelineRun.objects.get().status in (Status.QUEUED, Status.CLAIMED)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
def test_runpipeline_follow_streams_the_log_and_exits_with_the_run(
    make_pipeline, settings, tmp_path
):
    make_pipeline(
        "shout",
        main="import sys\nprint('hello out')\nprint('oops', file=sys.stderr)\nsys.exit(3)\n",
    )
    discover()
    worker = Worker(settings, tmp_path)
    worker.start()
    try:
        result = subprocess.run(
            [sys.executable, "manage.py", "runpipeline", "shout", "--follow"],
            cwd=django_settings.BASE_DIR,
            env=worker.environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        worker.kill()
    assert result.returncode == 3, result.stdout + result.stderr
    assert "hello out" in result.stdout.splitlines()
    assert "oops" in result.stderr.splitlines()
    assert "[fast-flow] finished: failed — exited with code 3" in result.stdout


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("runs_setup")
def test_with_redis_tasks_travel_through_it_and_runs_wake_the_worker(
    make_pipeline, settings, tmp_path
):
    import redis
    from django.db import connection as database
    from django_q.models import OrmQ

    from runs_app.follow import wait_for
    from runs_app.wakeup import CHANNEL
    from tests.runs_app.conftest import redis_database

    url = redis_database(7)
    queue_key = "django_q:fastflow:q"  # django-q2's list for the cluster "fastflow"
    connection = redis.Redis.from_url(url)
    connection.delete(queue_key)
    make_pipeline("via_redis", main="print('woken by redis')\n")
    discover()
    worker = Worker(settings, tmp_path)
    env = {**worker.environment(), "REDIS_URL": url}
    worker.environment = lambda: env
    queue_task = "from django_q.tasks import async_task; async_task('math.floor', 1.5)"
    shell = [sys.executable, "manage.py", "shell", "-c", queue_task]
    subprocess.run(shell, cwd=django_settings.BASE_DIR, env=env, check=True, capture_output=True)
    # A task waits in Redis (the database queue stays empty) until a worker takes it.
    assert connection.llen(queue_key) == 1
    assert not OrmQ.objects.exists()
    worker.start()
    try:
        assert wait_for(lambda: connection.llen(queue_key) == 0, timeout=60)
        if database.vendor != "postgresql":  # (PostgreSQL's own NOTIFY wakes it there)
            assert wait_for(lambda: connection.pubsub_numsub(CHANNEL)[0][1] >= 1, timeout=30)
        manage = [sys.executable, "manage.py", "runpipeline", "via_redis"]
        subprocess.run(manage, cwd=django_settings.BASE_DIR, env=env, check=True)
        run = PipelineRun.objects.get()
        assert wait_for(lambda: PipelineRun.objects.get(pk=run.pk).is_finished, timeout=90)
    finally:
        worker.kill()
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert "woken by redis" in log_text(run)


@pytest.mark.django_db
def test_the_run_button_never_redirects_off_site(operator_client, catalogue):
    response = operator_client.post(
        reverse("runs_app:start", args=["hello"]), {"next": "https://evil.example/"}
    )
    assert response.url == PipelineRun.objects.get().get_absolute_url()


@pytest.mark.django_db
def test_run_with_parameters(operator_client, catalogue):
    html = operator_client.get("/pipelines/hello/").content.decode()
    assert "Run with parameters" in html
    operator_client.post(
        reverse("runs_app:start", args=["hello"]),
        {"param_name": ["DAY", "", "MODE"], "param_value": ["monday", "ignored", "full"]},
    )
    assert PipelineRun.objects.get().parameters == {"DAY": "monday", "MODE": "full"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("PATH", "PATH is reserved"),
        ("PYTHONPATH", "PYTHONPATH is reserved"),
        ("UV_INDEX_URL", "UV_INDEX_URL is reserved"),
        ("LD_PRELOAD", "LD_PRELOAD is reserved"),
        ("FASTFLOW_RUN_ID", "FASTFLOW_RUN_ID is reserved"),
        ("HTTP_PROXY", "HTTP_PROXY is reserved"),
        ("ALL_PROXY", "ALL_PROXY is reserved"),
        ("NETRC", "NETRC is reserved"),
        ("API_TOKEN", "API_TOKEN is a secret of hello"),
        ("1BAD", "is not a variable name"),
    ],
)
def test_parameters_that_would_change_how_a_run_is_built_are_refused(
    operator_client, catalogue, name, words
):
    response = operator_client.post(
        reverse("runs_app:start", args=["hello"]),
        {"param_name": [name], "param_value": ["x"]},
        follow=True,
    )
    assert words in response.content.decode()
    assert not PipelineRun.objects.exists()
    with pytest.raises(CommandError, match=words):
        call_command("runpipeline", "hello", "-e", f"{name}=x", stdout=StringIO())
