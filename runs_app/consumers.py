"""The live log of a run over a websocket: the lines so far, new lines as they are written,
then the final status.

Messages to the browser (JSON):
    {"type": "lines", "lines": [[seq, timestamp, stream, text], ...]}
    {"type": "skipped", "count": n, "through": seq}   lines left out by the rate limit
    {"type": "status", "status": "running", "label": "running", "finished": false}
    {"type": "limits", "cpu_soft": cores, "cpu_hard": cores, "mem_soft": bytes, "mem_hard": bytes}
    {"type": "metrics", "samples": [{"t": timestamp, "cpu": percent, "mem": bytes}, ...]}

The browser connects with `?after=<last seq it has>`, so a reconnect gets exactly the lines
it missed. Lines come from the log file, which web and worker share; the file is never
throttled, only what is sent to a browser (LOG_STREAM_RATE_LIMIT lines per second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from runs_app.logs import LogTail, metrics_path, read_new_lines
from runs_app.models import PipelineRun

POLL_SECONDS = 0.05
STATUS_EVERY_SECONDS = 0.5
# The first batch (the log so far) may be larger than a second's worth.
CATCH_UP_SECONDS = 10

CLOSE_UNAUTHENTICATED, CLOSE_NOT_FOUND = 4401, 4404


class RateLimiter:
    """A token bucket: `rate` lines per second, bursts up to `capacity`."""

    def __init__(self, rate: int, capacity: int) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens = float(capacity)
        self.updated = time.monotonic()

    def allow(self, wanted: int) -> int:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        allowed = min(wanted, int(self.tokens))
        self.tokens -= allowed
        return allowed


@database_sync_to_async
def _load_run(public_id) -> PipelineRun | None:
    return PipelineRun.objects.filter(public_id=public_id).select_related("pipeline").first()


@database_sync_to_async
def _status(pk: int) -> str:
    return PipelineRun.objects.values_list("status", flat=True).get(pk=pk)


class RunLogConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.run = await _load_run(self.scope["url_route"]["kwargs"]["public_id"])
        if self.run is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.accept()
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            after = max(0, int(query.get("after", ["0"])[0]))
        except ValueError:
            after = 0
        self.streaming = asyncio.create_task(self.stream(after))

    async def disconnect(self, code: int) -> None:
        streaming = getattr(self, "streaming", None)
        if streaming:
            streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streaming

    async def stream(self, after: int) -> None:
        tail = LogTail(Path(self.run.log_path))
        await sync_to_async(tail.seek)(after)
        samples_offset = 0
        limits = self.run.pipeline.spec.run
        await self.send_json(
            {
                "type": "limits",
                "cpu_soft": limits.cpu_soft_limit,
                "cpu_hard": limits.cpu_hard_limit,
                "mem_soft": limits.mem_soft_limit_bytes,
                "mem_hard": limits.mem_hard_limit_bytes,
            }
        )
        rate = settings.LOG_STREAM_RATE_LIMIT
        limiter = RateLimiter(rate, rate * CATCH_UP_SECONDS)
        status = self.run.status
        await self.send_status(status)
        last_status_check = time.monotonic()
        while True:
            finished = status in PipelineRun.FINAL_STATUSES
            lines = await sync_to_async(tail.read)()
            if lines:
                await self.send_lines(lines, limiter)
            samples, samples_offset = await sync_to_async(read_new_lines)(
                metrics_path(self.run.log_path), samples_offset
            )
            if samples:
                await self.send_json(
                    {"type": "metrics", "samples": [json.loads(sample) for sample in samples]}
                )
            if finished and not lines:
                await self.send_status(status)
                await self.close()
                return
            if time.monotonic() - last_status_check >= STATUS_EVERY_SECONDS:
                last_status_check = time.monotonic()
                new_status = await _status(self.run.pk)
                if new_status != status and new_status not in PipelineRun.FINAL_STATUSES:
                    await self.send_status(new_status)
                status = new_status
                if status in PipelineRun.FINAL_STATUSES:
                    continue  # read what the end wrote, then report and close
            await asyncio.sleep(POLL_SECONDS)

    async def send_lines(
        self, lines: list[tuple[int, str, str, str]], limiter: RateLimiter
    ) -> None:
        allowed = limiter.allow(len(lines))
        skipped = len(lines) - allowed
        if skipped:
            # The newest lines matter most in a live view; the earlier ones are in the file.
            await self.send_json(
                {"type": "skipped", "count": skipped, "through": lines[skipped - 1][0]}
            )
        if allowed:
            await self.send_json(
                {"type": "lines", "lines": [list(line) for line in lines[skipped:]]}
            )

    async def send_status(self, status: str) -> None:
        await self.send_json(
            {
                "type": "status",
                "status": status,
                "label": PipelineRun.Status(status).label,
                "finished": status in PipelineRun.FINAL_STATUSES,
            }
        )
