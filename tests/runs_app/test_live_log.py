"""The live log websocket, through the real ASGI application (auth, origin, routing), over
both transports: polling the stored log in the database (the default) and pushes through a
Redis channel layer (REDIS_URL)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from fastflow_site.asgi import application
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app import live
from runs_app.logs import STDOUT, LogWriter, spool_path
from runs_app.models import PipelineRun
from tests.runs_app.conftest import redis_database

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost:8000")
# Longer than the consumer's look at the database when nothing is pushed (FALLBACK_SECONDS).
FALLBACK_WAIT = 3.0


@pytest.fixture(params=["database", "redis"])
def transport(request, settings) -> str:
    if request.param == "redis":
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [redis_database(9)], "prefix": f"test-{uuid.uuid4()}:"},
            }
        }
    return request.param


@pytest.fixture
def run(transport, make_pipeline, settings, tmp_path):
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0  # nothing executes: the test writes the log itself
    make_pipeline(
        "p", config={"mem_soft_limit": "64m", "mem_hard_limit": "128m", "cpu_hard_limit": 1}
    )
    discover()
    return PipelineRun.enqueue(Pipeline.objects.get(name="p"), trigger="manual")


def session_cookie(client, user) -> tuple[bytes, bytes]:
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def connect(run, headers, after=None) -> WebsocketCommunicator:
    path = f"/ws/runs/{run.public_id}/log/" + (f"?after={after}" if after is not None else "")
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=5)
    communicator.code = code
    communicator.connected = connected
    return communicator


async def receive_until(communicator, predicate, timeout=5.0) -> list[dict]:
    messages = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        message = await communicator.receive_json_from(timeout=timeout)
        messages.append(message)
        if predicate(message):
            return messages
    raise AssertionError(f"not received; got {messages}")


def lines_in(messages) -> list[list]:
    return [line for m in messages if m["type"] == "lines" for line in m["lines"]]


def write(run, *texts, publish=True):
    """Like a worker: to the database, and to the channel layer when there is one."""
    writer = LogWriter(
        spool_path(run.public_id), publish_as=run.public_id if publish else None, run_id=run.pk
    )
    for text in texts:
        writer.write(STDOUT, text)
    writer.close()
    assert live.flush()


def finish(run, status=PipelineRun.Status.SUCCEEDED):
    PipelineRun.objects.filter(pk=run.pk).update(status=status, finished_at=timezone.now())
    live.status_changed(run.public_id)


async def test_an_anonymous_websocket_is_refused(run):
    communicator = await connect(run, [ORIGIN])
    assert not communicator.connected
    assert communicator.code == 4401


async def test_a_foreign_origin_is_refused(run, client, viewer):
    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    communicator = await connect(run, [(b"origin", b"https://evil.example"), cookie])
    assert not communicator.connected


async def test_an_unknown_run_is_refused(run, client, viewer):
    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    communicator = WebsocketCommunicator(
        application, "/ws/runs/00000000-0000-4000-8000-000000000000/log/", headers=[ORIGIN, cookie]
    )
    connected, code = await communicator.connect(timeout=5)
    assert not connected and code == 4404


async def test_lines_so_far_then_new_lines_then_the_final_status(run, client, viewer):
    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    await database_sync_to_async(write)(run, "one", "two")
    communicator = await connect(run, [ORIGIN, cookie])
    assert communicator.connected
    first = await receive_until(communicator, lambda m: m["type"] == "lines")
    assert {"type": "status", "status": "queued", "label": "queued", "finished": False} in first
    assert [(seq, text) for seq, _, _, text in lines_in(first)] == [(1, "one"), (2, "two")]
    await database_sync_to_async(write)(run, "three")
    later = await receive_until(communicator, lambda m: m["type"] == "lines")
    assert [(seq, stream, text) for seq, _, stream, text in lines_in(later)] == [(3, "O", "three")]
    await database_sync_to_async(write)(run, "last words")
    await database_sync_to_async(finish)(run)
    end = await receive_until(communicator, lambda m: m["type"] == "status" and m["finished"])
    assert [text for *_, text in lines_in(end)] == ["last words"]  # before the status
    assert end[-1]["status"] == "succeeded"
    assert (await communicator.receive_output(timeout=5))["type"] == "websocket.close"


async def test_a_reconnect_gets_exactly_the_missed_lines(run, client, viewer):
    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    await database_sync_to_async(write)(run, *[f"line {i}" for i in range(1, 11)])
    communicator = await connect(run, [ORIGIN, cookie], after=7)
    messages = await receive_until(communicator, lambda m: m["type"] == "lines")
    assert [seq for seq, *_ in lines_in(messages)] == [8, 9, 10]
    await communicator.disconnect()


async def test_the_browser_is_rate_limited_and_told_what_it_missed(run, client, viewer, settings):
    settings.LOG_STREAM_RATE_LIMIT = 5  # a burst of 50 lines at most for the catch-up
    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    await database_sync_to_async(write)(run, *[f"line {i}" for i in range(1, 81)])
    communicator = await connect(run, [ORIGIN, cookie])
    messages = await receive_until(communicator, lambda m: m["type"] == "lines")
    skipped = next(m for m in messages if m["type"] == "skipped")
    assert skipped == {"type": "skipped", "count": 30, "through": 30}
    assert [seq for seq, *_ in lines_in(messages)] == list(range(31, 81))
    await communicator.disconnect()


async def test_live_cpu_and_memory_with_the_limits(run, client, viewer):
    from runs_app.logs import MetricsWriter

    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    communicator = await connect(run, [ORIGIN, cookie])
    first = await receive_until(communicator, lambda m: m["type"] == "limits")
    assert first[-1] == {
        "type": "limits",
        "cpu_soft": None,
        "cpu_hard": 1.0,
        "mem_soft": 64 * 1024**2,
        "mem_hard": 128 * 1024**2,
    }
    writer = await database_sync_to_async(MetricsWriter)(run.pk, publish_as=run.public_id)
    writer.sample(42.5, 10_000_000)
    await database_sync_to_async(writer.close)()
    messages = await receive_until(communicator, lambda m: m["type"] == "metrics")
    (sample,) = messages[-1]["samples"]
    assert sample["cpu"] == 42.5 and sample["mem"] == 10_000_000
    await communicator.disconnect()


@pytest.mark.parametrize("transport", ["redis"], indirect=True)
async def test_pushed_lines_are_sent_as_they_come(run, client, viewer):
    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    communicator = await connect(run, [ORIGIN, cookie])
    await receive_until(communicator, lambda m: m["type"] == "status")
    # Only in the channel layer (not stored): it can only have come from there.
    live.line(run.public_id, 1, "2026-11-22T10:00:00.000000000Z", "O", "pushed")
    messages = await receive_until(communicator, lambda m: m["type"] == "lines")
    assert lines_in(messages) == [[1, "2026-11-22T10:00:00.000000000Z", "O", "pushed"]]
    await communicator.disconnect()


@pytest.mark.parametrize("transport", ["redis"], indirect=True)
async def test_a_gap_in_the_pushed_lines_is_filled_from_the_database(run, client, viewer):
    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    communicator = await connect(run, [ORIGIN, cookie])
    await receive_until(communicator, lambda m: m["type"] == "status")
    # Lines 1-3 are stored but never reach the channel layer (a dropped message); line 4 does.
    await database_sync_to_async(write)(run, "one", "two", "three", publish=False)
    await database_sync_to_async(write)(run, "four")
    messages = await receive_until(
        communicator, lambda m: lines_in([m])[-1:] and m["lines"][-1][0] == 4
    )
    assert [(seq, text) for seq, *_, text in lines_in(messages)] == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
        (4, "four"),
    ]
    await communicator.disconnect()


@pytest.mark.parametrize("transport", ["redis"], indirect=True)
async def test_a_worker_that_numbers_on_after_a_reattach(run, client, viewer):
    """A re-attached worker opens the log again: its pushed lines continue the sequence."""
    await database_sync_to_async(write)(run, "before the worker died", publish=False)
    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    communicator = await connect(run, [ORIGIN, cookie], after=1)
    await receive_until(communicator, lambda m: m["type"] == "status")
    await database_sync_to_async(write)(run, "after the re-attach")
    messages = await receive_until(communicator, lambda m: m["type"] == "lines")
    assert [(seq, text) for seq, *_, text in lines_in(messages)] == [(2, "after the re-attach")]
    await communicator.disconnect()


@pytest.mark.parametrize("transport", ["database"], indirect=True)
async def test_the_live_view_goes_on_while_redis_restarts(
    run, client, viewer, settings, private_redis
):
    """Redis restarted under an open live view: the socket stays open, no line is lost or
    doubled (the database fills in while Redis is away), and pushed lines come again after
    (the viewer joined its group again: a restarted Redis forgets groups)."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "runs_app.live.RedisChannelLayer",
            "CONFIG": {"hosts": [private_redis.url], "prefix": "test-restart:"},
        }
    }
    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    communicator = await connect(run, [ORIGIN, cookie])
    received = lines_in(await receive_until(communicator, lambda m: m["type"] == "status"))

    def until(seq: int):
        return lambda m: m["type"] == "lines" and m["lines"][-1][0] >= seq

    await database_sync_to_async(write)(run, *[f"line {i}" for i in range(1, 6)])
    received += lines_in(await receive_until(communicator, until(5)))
    await sync_to_async(private_redis.restart)()
    await database_sync_to_async(write)(run, *[f"line {i}" for i in range(6, 11)])
    received += lines_in(await receive_until(communicator, until(10)))
    # Only in the channel layer (not stored): it can only have come from the group.
    pushed = [11, "2026-12-06T10:00:00.000000000Z", "O", "pushed after the restart"]
    deadline = asyncio.get_running_loop().time() + 15
    while pushed not in received:
        assert asyncio.get_running_loop().time() < deadline, received[-3:]
        live.line(run.public_id, *pushed)
        if not await communicator.receive_nothing(timeout=FALLBACK_WAIT):
            received += lines_in([await communicator.receive_json_from(timeout=5)])
    assert [line[0] for line in received] == list(range(1, 12))
    await communicator.disconnect()


@pytest.mark.parametrize("transport", ["database"], indirect=True)
async def test_the_live_view_goes_on_while_the_database_is_away(
    postgresql_outage, run, client, viewer
):
    """PostgreSQL restarts under an open live view while the run prints: its lines wait in
    the worker's spool; the viewer is neither cut off nor stuck, gets them once the database
    is back, in order, none lost or doubled, and sees the final status."""
    cookie = await database_sync_to_async(session_cookie)(client, viewer)
    outage = postgresql_outage
    communicator = await connect(run, [ORIGIN, cookie])
    writer = await database_sync_to_async(LogWriter)(
        spool_path(run.public_id), publish_as=run.public_id, run_id=run.pk
    )
    await sync_to_async(writer.write)(STDOUT, "one")
    await sync_to_async(writer.write)(STDOUT, "two")
    received = lines_in(await receive_until(communicator, lambda m: m["type"] == "lines"))
    await sync_to_async(outage.begin)()
    try:
        await sync_to_async(writer.write)(STDOUT, "three")  # spooled: no database needed
        await sync_to_async(writer.write)(STDOUT, "four")
        # Its reads, access and status checks failed meanwhile, and said nothing.
        assert await communicator.receive_nothing(timeout=2.5)
    finally:
        await sync_to_async(outage.end)()
    while len(received) < 4:
        received += lines_in(
            await receive_until(communicator, lambda m: m["type"] == "lines", timeout=15)
        )
    await database_sync_to_async(writer.close)()
    await database_sync_to_async(finish)(run)
    end = await receive_until(
        communicator, lambda m: m["type"] == "status" and m["finished"], timeout=10
    )
    assert end[-1]["status"] == "succeeded"
    assert [text for *_, text in received] == ["one", "two", "three", "four"]
    assert [seq for seq, *_ in received] == [1, 2, 3, 4]
    assert (await communicator.receive_output(timeout=5))["type"] == "websocket.close"
