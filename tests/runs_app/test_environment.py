"""The run environment: the documented merge order case by case, secrets kept out of the
record, masked in the file, the live stream and the download; a bad token fails the run."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet

from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline, Schedule
from runs_app.environment import build_environment
from runs_app.models import PipelineRun
from secrets_app import crypto
from secrets_app.models import Variable
from tests.runs_app.conftest import every_executor, execute, log_text
from tests.runs_app.test_live_log import ORIGIN, connect, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

SOURCES = [
    "pipeline default_env",
    "schedule default_env",
    "pipeline encrypted_env",
    "schedule encrypted_env",
    "global stored",
    "pipeline stored",
    "this run",
]


def setup_sources(make_pipeline, present: set[str], *, secret_stored: bool = True):
    """A pipeline where every source in `present` sets WHO to its own name."""
    config = {"default_env": {}, "encrypted_env": {}, "schedules": [{"id": "nightly"}]}
    schedule = config["schedules"][0]
    if "pipeline default_env" in present:
        config["default_env"]["WHO"] = "pipeline default_env"
    if "schedule default_env" in present:
        schedule["default_env"] = {"WHO": "schedule default_env"}
    if "pipeline encrypted_env" in present:
        config["encrypted_env"]["WHO"] = crypto.encrypt("pipeline encrypted_env")
    if "schedule encrypted_env" in present:
        schedule["encrypted_env"] = {"WHO": crypto.encrypt("schedule encrypted_env")}
    make_pipeline("merge", config=config)
    discover()
    pipeline = Pipeline.objects.get(name="merge")
    kind = Variable.Kind.SECRET if secret_stored else Variable.Kind.PARAMETER
    for source, scope in (("global stored", None), ("pipeline stored", pipeline)):
        if source in present:
            variable = Variable(name="WHO", kind=kind, pipeline=scope)
            variable.set_value(source)
            variable.save()
    run = PipelineRun.enqueue(
        pipeline,
        trigger=PipelineRun.Trigger.SCHEDULE,
        schedule=Schedule.objects.get(pipeline=pipeline, config_id="nightly"),
        parameters={"WHO": "this run"} if "this run" in present else {},
    )
    return run


@pytest.mark.parametrize("winner", range(len(SOURCES)), ids=SOURCES)
def test_later_sources_win(make_pipeline, settings, winner):
    settings.MAX_CONCURRENT_RUNS = 0
    run = setup_sources(make_pipeline, set(SOURCES[: winner + 1]))
    environment = build_environment(run)
    assert environment.variables["WHO"] == SOURCES[winner]
    secret = SOURCES[winner] in {
        "pipeline encrypted_env",
        "schedule encrypted_env",
        "global stored",
        "pipeline stored",
    }
    assert ("WHO" in environment.secret_names) is secret
    assert ("WHO" in environment.visible) is not secret


def test_stored_parameters_are_visible_and_fastflow_variables_come_last(make_pipeline, settings):
    settings.MAX_CONCURRENT_RUNS = 0
    run = setup_sources(make_pipeline, {"global stored"}, secret_stored=False)
    environment = build_environment(run)
    assert environment.visible["WHO"] == "global stored"
    assert environment.variables["FASTFLOW_RUN_ID"] == str(run.public_id)
    assert environment.secret_names == set()


def test_a_token_that_does_not_decrypt_fails_the_run_naming_the_variable(
    make_pipeline, settings, runs_setup
):
    foreign = Fernet(Fernet.generate_key()).encrypt(b"other instance secret").decode()
    make_pipeline("bad_token", config={"encrypted_env": {"DB_PASSWORD": foreign}})
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="bad_token"), trigger="manual")
    run = execute(run)
    assert run.status == PipelineRun.Status.FAILED
    assert run.failure_reason == PipelineRun.FailureReason.SECRET
    assert "encrypted_env DB_PASSWORD does not decrypt" in run.error_message
    assert foreign not in run.error_message and "other instance" not in log_text(run)
    assert "DB_PASSWORD" in log_text(run)
    assert not run.retries.exists()


PRINTER = (
    "import os\n"
    "print('stored', os.environ['API_TOKEN'])\n"
    "print('file', os.environ['DB_PASSWORD'])\n"
    "print('inside a word: x' + os.environ['API_TOKEN'] + 'y')\n"
)


@every_executor
def test_secrets_are_masked_in_the_file_the_stream_and_the_download(
    make_pipeline, settings, runs_setup, admin_client, admin_user
):
    make_pipeline(
        "leaky", main=PRINTER, config={"encrypted_env": {"DB_PASSWORD": crypto.encrypt("pw-9876")}}
    )
    discover()
    stored = Variable(name="API_TOKEN", kind=Variable.Kind.SECRET)
    stored.set_value("tok-12345")
    stored.save()
    run = execute(PipelineRun.enqueue(Pipeline.objects.get(name="leaky"), trigger="manual"))
    assert run.status == PipelineRun.Status.SUCCEEDED, log_text(run)
    text = log_text(run)
    assert "stored ***" in text and "file ***" in text and "inside a word: x***y" in text
    assert "tok-12345" not in text and "pw-9876" not in text
    # The record keeps names only.
    assert sorted(run.secret_env_names) == ["API_TOKEN", "DB_PASSWORD"]
    assert "tok-12345" not in str(run.environment) and "pw-9876" not in str(run.environment)
    # The download and the run page.
    download = b"".join(admin_client.get(f"{run.get_absolute_url()}log/").streaming_content)
    page = admin_client.get(run.get_absolute_url()).content
    for body in (download, page):
        assert b"tok-12345" not in body and b"pw-9876" not in body
    assert b"stored ***" in download
    # The live stream.
    streamed = async_to_sync_stream(admin_client, admin_user, run)
    assert "stored ***" in streamed and "tok-12345" not in streamed and "pw-9876" not in streamed


def async_to_sync_stream(client, user, run) -> str:
    """Every line text the live log sends for a finished run, until it closes."""
    from asgiref.sync import async_to_sync

    cookie = session_cookie(client, user)

    async def receive_all() -> str:
        communicator = await connect(run, [ORIGIN, cookie])
        assert communicator.connected
        texts = []
        while (output := await communicator.receive_output(timeout=10))["type"] == "websocket.send":
            message = json.loads(output["text"])
            if message["type"] == "lines":
                texts += [line[3] for line in message["lines"]]
        assert output["type"] == "websocket.close"  # the stream ends after the final status
        return "\n".join(texts)

    return async_to_sync(receive_all)()


SIX_FORMS = (
    "import base64, json, os, sys, urllib.parse\n"
    "token, key = os.environ['API_TOKEN'], os.environ['SSH_KEY']\n"
    "print('plain', token)\n"
    "print('base64', base64.b64encode(token.encode()).decode())\n"
    "print('basic', base64.b64encode(('bot:' + token).encode()).decode())\n"
    "print('url', urllib.parse.quote(token, safe=''))\n"
    "print('json', json.dumps({'token': token}))\n"
    "print('pem line', key.splitlines()[1])\n"
    "open(os.environ['FASTFLOW_ROUTE_FILE'], 'w').write(token)\n"
    "print('failing with', token, file=sys.stderr)\n"
    "sys.exit(3)\n"
)
TOKEN = 'tok/"12345"+secret'
KEY = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END KEY-----"


def test_every_printed_form_of_a_secret_is_masked_in_the_log_and_the_record(
    make_pipeline, runs_setup, admin_client
):
    make_pipeline(
        "leaky", main=SIX_FORMS, config={"encrypted_env": {"SSH_KEY": crypto.encrypt(KEY)}}
    )
    discover()
    stored = Variable(name="API_TOKEN", kind=Variable.Kind.SECRET)
    stored.set_value(TOKEN)
    stored.save()
    run = execute(PipelineRun.enqueue(Pipeline.objects.get(name="leaky"), trigger="manual"))
    assert run.status == PipelineRun.Status.FAILED and run.exit_code == 3, log_text(run)
    download = b"".join(admin_client.get(f"{run.get_absolute_url()}log/").streaming_content)
    record = json.dumps(
        {
            "route": run.route,
            "error": run.error_message,
            "environment": run.environment,
            "parameters": run.parameters,
        }
    )
    forms = [
        TOKEN,
        base64.b64encode(TOKEN.encode()).decode(),
        quote(TOKEN, safe=""),
        json.dumps(TOKEN)[1:-1],
        "MIIEvQIBADANBgkqhkiG9w0B",
        "12345",
    ]
    for text in (log_text(run), download.decode(), record):
        for form in forms:
            assert form not in text, (form, text)
    assert run.route == "***"
