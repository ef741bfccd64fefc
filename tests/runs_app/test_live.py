"""Live events through the channel layer: batching, order, and a publisher per process."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from runs_app import live
from tests.runs_app.conftest import redis_database


def test_adjacent_lines_of_a_run_travel_together_in_order():
    batch = [
        ("run-a", "run.lines", [1, "t", "O", "one"]),
        ("run-a", "run.lines", [2, "t", "O", "two"]),
        ("run-b", "run.lines", [1, "t", "O", "other run"]),
        ("run-a", "run.metrics", {"t": "t", "cpu": 1.0, "mem": 1}),
        ("run-a", "run.lines", [3, "t", "S", "finished"]),
        ("run-a", "run.status", None),
    ]
    assert live.coalesce(batch) == [
        ("run-a", {"type": "run.lines", "lines": [[1, "t", "O", "one"], [2, "t", "O", "two"]]}),
        ("run-b", {"type": "run.lines", "lines": [[1, "t", "O", "other run"]]}),
        ("run-a", {"type": "run.metrics", "samples": [{"t": "t", "cpu": 1.0, "mem": 1}]}),
        ("run-a", {"type": "run.lines", "lines": [[3, "t", "S", "finished"]]}),
        ("run-a", {"type": "run.status"}),
    ]


def test_a_message_holds_a_bounded_number_of_lines():
    batch = [("run-a", "run.lines", [n, "t", "O", "x"]) for n in range(1, 1202)]
    sizes = [len(message["lines"]) for _, message in live.coalesce(batch)]
    assert sizes == [live.MAX_LINES_PER_MESSAGE, live.MAX_LINES_PER_MESSAGE, 201]


def test_without_a_channel_layer_nothing_is_published(settings):
    settings.CHANNEL_LAYERS = {}
    live.line("run", 1, "t", "O", "x")
    live.status_changed("run")
    assert live.flush()


async def test_events_reach_the_group_through_redis(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_database(9)], "prefix": f"test-{uuid.uuid4()}:"},
        }
    }
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(live.group_name("r1"), channel)
    for seq in (1, 2, 3):
        live.line("r1", seq, "t", "O", f"line {seq}")
    live.status_changed("r1")
    assert await sync_to_async(live.flush)()

    received = []
    while not received or received[-1]["type"] != "run.status":
        received.append(await asyncio.wait_for(layer.receive(channel), 5))
    lines = [line for message in received[:-1] for line in message["lines"]]
    assert [seq for seq, *_ in lines] == [1, 2, 3]


@pytest.fixture(autouse=True)
def _no_publisher_left_behind():
    yield
    live.flush()
