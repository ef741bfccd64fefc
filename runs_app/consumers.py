"""The live log of a run over a websocket: the lines so far, new lines as they are written,
then the final status.

Messages to the browser (JSON):
    {"type": "lines", "lines": [[seq, timestamp, stream, text], ...]}
    {"type": "skipped", "count": n, "through": seq}   lines left out by the rate limit
    {"type": "status", "status": "running", "label": "running", "finished": false}
    {"type": "limits", "cpu_soft": cores, "cpu_hard": cores, "mem_soft": bytes, "mem_hard": bytes}
    {"type": "metrics", "samples": [{"t": timestamp, "cpu": percent, "mem": bytes}, ...]}

The browser connects with `?after=<last seq it has>`, so a reconnect gets exactly the lines
it missed. Only what is sent to a browser is throttled (LOG_STREAM_RATE_LIMIT lines per
second), never what is stored.

Two transports, one cursor (the last sequence number sent):
- no channel layer (the default): the consumer polls the run's stored log and its row in
  the database (runs_app.stored_logs), which every worker ships lines to as they come;
- a channel layer (REDIS_URL): the worker pushes lines, samples and status changes
  (runs_app.live) and the consumer waits for them. Pushed lines that continue the cursor are
  sent as they are; the first batch, a gap or a quiet spell is read from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from importlib import import_module
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError

from runs_app import live
from runs_app.models import PipelineRun
from runs_app.stored_logs import LogTail, samples_after

logger = logging.getLogger(__name__)

# Without pushed events, the stored log is read this often (the worker stores new lines
# within about 0.1 s of their writing).
POLL_SECONDS = 0.2
STATUS_EVERY_SECONDS = 0.5
# With pushed events, the stored log and the row are still checked this often, in case an event
# was lost (a worker killed mid-run, Redis restarted).
FALLBACK_SECONDS = 2.0
# The first batch (the log so far) may be larger than a second's worth.
CATCH_UP_SECONDS = 10

CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND = 4401, 4403, 4404
CLOSE_INTERNAL_ERROR = 1011
# A viewer whose person was deactivated, or whose session ended (signed out, ended by an
# admin), is cut off within this long.
ACCESS_CHECK_SECONDS = 1.0
READ_RUNS = "runs_app.view_pipelinerun"


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


def continues(lines: list, cursor: int) -> bool:
    """Whether `lines` are numbered on from `cursor` without a gap."""
    return bool(lines) and all(line[0] == cursor + n for n, line in enumerate(lines, start=1))


@database_sync_to_async
def _load_run(public_id) -> PipelineRun | None:
    run = PipelineRun.objects.filter(public_id=public_id).select_related("pipeline", "schedule")
    return run.first()


@database_sync_to_async
def _may_read(user) -> bool:
    return user.has_perm(READ_RUNS)


@database_sync_to_async
def _still_allowed(user_pk: int, session_key: str | None) -> bool | None:
    """The person is still active, may still read runs, and their session still exists
    (None: unknown now — the database is away; asked again a second later)."""
    try:
        user = get_user_model().objects.filter(pk=user_pk, is_active=True).first()
        if user is None or not user.has_perm(READ_RUNS):
            return False
        store = import_module(settings.SESSION_ENGINE).SessionStore
        return session_key is None or store().exists(session_key)
    except DatabaseError:
        return None


@database_sync_to_async
def _status(pk: int) -> str | None:
    """The run's status (None while the database is away: the viewer keeps reading the
    log, and asks again; database_sync_to_async gives each call a sound connection)."""
    try:
        return PipelineRun.objects.values_list("status", flat=True).get(pk=pk)
    except DatabaseError:
        return None


class RunLogConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await _may_read(user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        self.run = await _load_run(self.scope["url_route"]["kwargs"]["public_id"])
        if self.run is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.pushed_lines: list[list] = []
        self.pushed_samples: list[dict] = []
        self.status_hint = False
        self.wake = asyncio.Event()
        self.group = None
        self.heard_from_group = self.tail_read = False
        self.joined = True
        if self.channel_layer is not None:
            # Join before reading anything, so nothing written in between is missed.
            self.group = live.group_name(self.run.public_id)
            await self.join_group()
        await self.accept()
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            after = max(0, int(query.get("after", ["0"])[0]))
        except ValueError:
            after = 0
        self.streaming = asyncio.create_task(self.stream_or_close(after))

    async def disconnect(self, code: int) -> None:
        streaming = getattr(self, "streaming", None)
        if streaming:
            streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streaming
        if getattr(self, "group", None):
            with contextlib.suppress(Exception):  # Redis away: the membership expires there
                await self.channel_layer.group_discard(self.group, self.channel_name)

    async def join_group(self) -> None:
        try:
            await self.channel_layer.group_add(self.group, self.channel_name)
            self.joined = True
        except Exception as problem:  # Redis away: the database still serves
            if self.joined:  # said once per outage
                logger.warning("live view of %s: could not join its group: %s", self.group, problem)
            self.joined = False

    # --- events pushed by the worker (runs_app.live) -----------------------------------------

    async def run_lines(self, event: dict) -> None:
        self.pushed_lines.extend(event["lines"])
        self.heard_from_group = True
        self.wake.set()

    async def run_metrics(self, event: dict) -> None:
        self.pushed_samples.extend(event["samples"])
        self.wake.set()

    async def run_status(self, event: dict) -> None:
        self.status_hint = True
        self.wake.set()

    # --- the stream --------------------------------------------------------------------------

    async def stream_or_close(self, after: int) -> None:
        """Never a silent, dead stream: a failure closes the socket, and the browser
        connects again after the last line it has."""
        try:
            await self.stream(after)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("live view of run %s failed; the viewer reconnects", self.run)
            await self.close(code=CLOSE_INTERNAL_ERROR)

    async def stream(self, after: int) -> None:
        self.cursor = after
        self.tail = LogTail(self.run.pk)
        self.samples_seq = 0
        self.last_sample = ""
        limits = self.run.effective_limits  # as its container got them
        await self.send_json(
            {
                "type": "limits",
                "cpu_soft": limits.cpu_soft,
                "cpu_hard": limits.cpu_hard,
                "mem_soft": limits.mem_soft_bytes,
                "mem_hard": limits.mem_hard_bytes,
            }
        )
        rate = settings.LOG_STREAM_RATE_LIMIT
        limiter = RateLimiter(rate, rate * CATCH_UP_SECONDS)
        status = self.run.status
        await self.send_status(status)
        pushed = self.group is not None
        status_every = FALLBACK_SECONDS if pushed else STATUS_EVERY_SECONDS
        last_status_check = last_stored_read = last_access_check = time.monotonic()
        read_stored = True  # the lines so far
        while True:
            if time.monotonic() - last_access_check >= ACCESS_CHECK_SECONDS:
                last_access_check = time.monotonic()
                allowed = await _still_allowed(self.scope["user"].pk, self.session_key)
                if allowed is False:
                    await self.close(code=CLOSE_UNAUTHENTICATED)
                    return
            finished = status in PipelineRun.FINAL_STATUSES
            read_stored = (
                read_stored or finished or time.monotonic() - last_stored_read >= status_every
            )
            if read_stored:
                last_stored_read = time.monotonic()
            caught_up = self.tail_read  # (the first read is the log so far)
            lines = await self.new_lines(from_store=read_stored or not pushed)
            self.tail_read = True
            if lines:
                await self.send_lines(lines, limiter)
            if (
                pushed
                and read_stored
                and caught_up
                and (not self.joined or (lines and not self.heard_from_group))
            ):
                # New lines the group never brought (or the last join failed): Redis may
                # have restarted and forgotten this viewer's membership (groups live in
                # Redis). Joining again is cheap.
                await self.join_group()
            self.heard_from_group = False
            samples = await self.new_samples(from_store=read_stored or not pushed)
            if samples:
                await self.send_json({"type": "metrics", "samples": samples})
            if finished and not lines:
                await self.send_status(status)
                await self.close()
                return
            if self.status_hint or time.monotonic() - last_status_check >= status_every:
                self.status_hint = False
                last_status_check = time.monotonic()
                new_status = await _status(self.run.pk) or status
                if new_status != status and new_status not in PipelineRun.FINAL_STATUSES:
                    await self.send_status(new_status)
                status = new_status
                if status in PipelineRun.FINAL_STATUSES:
                    continue  # read what the end wrote, then report and close
            read_stored = await self.wait(POLL_SECONDS if not pushed else ACCESS_CHECK_SECONDS)

    async def wait(self, seconds: float) -> bool:
        """Sleep until an event or `seconds`; True when the time ran out (read the database)."""
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            return True
        self.wake.clear()
        return False

    async def new_lines(self, from_store: bool) -> list[tuple[int, str, str, str]]:
        """Lines after the cursor: pushed ones if they continue it, otherwise the stored
        ones (and pushed ones that continue those: a line is pushed before it is stored)."""
        pushed, self.pushed_lines = self.pushed_lines, []
        fresh = [tuple(line) for line in pushed if line[0] > self.cursor]
        if not continues(fresh, self.cursor) and (fresh or from_store):
            # A gap (or the first read, or a quiet spell): the database has every line.
            self.tail.seq = self.cursor
            try:
                stored = await database_sync_to_async(self.tail.read)()
            except DatabaseError:
                stored = []  # away for a while: the lines wait, and come when it is back
            end = stored[-1][0] if stored else self.cursor
            fresh = stored + [line for line in fresh if line[0] > end]
            if not continues(fresh, self.cursor):
                fresh = stored
        if fresh:
            self.cursor = fresh[-1][0]
        return fresh

    async def new_samples(self, from_store: bool) -> list[dict]:
        samples = self.pushed_samples
        self.pushed_samples = []
        if from_store:
            try:
                stored, self.samples_seq = await database_sync_to_async(samples_after)(
                    self.run.pk, self.samples_seq
                )
            except DatabaseError:
                stored = []
            samples = [*samples, *stored]
        # Pushed and read samples overlap; their timestamps sort as text.
        fresh = sorted(
            (sample for sample in samples if sample["t"] > self.last_sample),
            key=lambda sample: sample["t"],
        )
        unique = [s for i, s in enumerate(fresh) if i == 0 or s["t"] != fresh[i - 1]["t"]]
        if unique:
            self.last_sample = unique[-1]["t"]
        return unique

    async def send_lines(
        self, lines: list[tuple[int, str, str, str]], limiter: RateLimiter
    ) -> None:
        allowed = limiter.allow(len(lines))
        skipped = len(lines) - allowed
        if skipped:
            # The newest lines matter most in a live view; the earlier ones are stored.
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
