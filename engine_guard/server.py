"""The engine guard's proxy: one request per client connection, read whole (head and
body), judged by `policy`, then passed to the engine with `Connection: close` and its answer
streamed back (logs, stats and waits may go on for hours) until the engine ends it."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from engine_guard import policy

logger = logging.getLogger("engine_guard")
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
CHUNK = 64 * 1024


@dataclass
class Guard:
    upstream: str  # the engine's unix socket
    allowances: list[policy.Allowance] = field(default_factory=list)
    images: set[str] = field(default_factory=set)  # empty: any image

    async def handle(self, client_reader, client_writer) -> None:
        try:
            await self._handle(client_reader, client_writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            client_writer.close()

    async def _handle(self, client_reader, client_writer) -> None:
        head = await client_reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        try:
            method, target, _ = request_line.split(" ", 2)
        except ValueError:
            return await self.refuse(client_writer, 400, "not an HTTP request")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self.refuse(client_writer, 411, "send a Content-Length, not chunks")
        if "upgrade" in headers:
            return await self.refuse(client_writer, 403, "connection upgrades (attach, exec) "
                                     "are not allowed")  # fmt: skip
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY:
            return await self.refuse(client_writer, 413, "the request body is too large")
        body = await client_reader.readexactly(length) if length else b""
        path, query = policy.split_target(target)
        reason = await self.judge(method, path, query, body)
        if reason:
            logger.warning("refused %s %s: %s", method, path, reason)
            return await self.refuse(client_writer, 403, reason)
        logger.info("passed %s %s", method, path)
        await self.forward(method, target, lines, body, client_reader, client_writer)

    async def judge(self, method: str, path: str, query: dict, body: bytes) -> str:
        found = policy.match(method, path)
        if found is None:
            return f"{method} {path} is not a call runs need"
        matched, kind = found
        if path == "/containers/create":
            config = _json(body)
            if self.images and config.get("Image") not in self.images:
                return f"the image {config.get('Image')!r} is not the worker image"
            return policy.check_create(body, self.allowances)
        if path == "/containers/json" and not policy.lists_runs_only(query):
            return f"list containers with a {policy.RUN_LABEL} label filter"
        if path == "/events" and not policy.watches_pool_only(query):
            return f"watch events with a {policy.POOL_LABEL} label filter"
        if path == "/networks/create":
            return policy.check_network_create(body)
        if kind == "container":
            return await self.judge_container(matched.group("id"))
        return await self.judge_swarm(path, query, body, kind, matched)

    async def judge_swarm(self, path: str, query: dict, body: bytes, kind, matched) -> str:
        """Services, tasks, secrets and configs: Fast-Flow's own only (policy.py)."""
        if path in policy.SWARM_LISTS and not policy.lists_runs_only(query):
            return f"list {path[1:]} with a {policy.RUN_LABEL} label filter"
        if path == "/services/create":
            return policy.check_service_create(body, await self.image_ids())
        if path in ("/secrets/create", "/configs/create"):
            return policy.check_swarm_object_create(body)
        if path == "/tasks":
            services = policy.filtered(query, "service")
            if not services:
                return "list the tasks of a service (a service filter)"
            for service in services:
                if reason := await self.judge_owned("services", service):
                    return reason
        if kind in ("service", "secret", "config"):
            return await self.judge_owned(f"{kind}s", matched.group("id"))
        return ""

    async def judge_owned(self, kind: str, object_id: str) -> str:
        """A service, secret or config must carry Fast-Flow's run label."""
        if "/" in object_id or object_id in ("", ".", ".."):
            return f"{object_id!r} is not a name"
        labels = await self.labels_of(f"/{kind}/{object_id}", "Spec")
        if labels is None:
            return ""  # the engine answers "not found" itself
        if policy.RUN_LABEL not in labels:
            return f"these {kind} were not made by Fast-Flow"
        return ""

    async def image_ids(self) -> set[str] | None:
        """The ids of the allowed images (services name their image by id), or None."""
        if not self.images:
            return None
        ids = set()
        for image in self.images:
            status, answer = await self.ask_engine(f"/images/{image}/json")
            if status == 200 and _json(answer).get("Id"):
                ids.add(_json(answer)["Id"])
        return ids

    async def judge_container(self, container_id: str) -> str:
        """Calls about a container are for Fast-Flow's own (those with its run label)."""
        labels = await self.labels_of(f"/containers/{container_id}/json", "Config")
        if labels is None:
            return ""  # the engine answers "no such container" itself
        if policy.RUN_LABEL not in labels:
            return "this container was not made by Fast-Flow"
        return ""

    async def labels_of(self, path: str, section: str) -> dict | None:
        """The labels of the object the engine describes at `path` (under `section` of its
        answer): None when the engine does not know it, none when it did not answer."""
        status, answer = await self.ask_engine(path)
        if status == 404:
            return None
        if status != 200:
            return {}
        return (_json(answer).get(section) or {}).get("Labels") or {}

    async def ask_engine(self, path: str) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_unix_connection(self.upstream)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 502
        return status, body

    async def forward(self, method, target, lines, body, client_reader, client_writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.upstream)
        kept = [
            line for line in lines if not line.lower().startswith(("connection:", "keep-alive:"))
        ]
        head = "\r\n".join([f"{method} {target} HTTP/1.1", *kept, "Connection: close", "", ""])
        upstream_writer.write(head.encode("latin-1") + body)
        await upstream_writer.drain()
        # The client may hang up first (a follower closing a log stream): stop then too.
        hang_up = asyncio.ensure_future(client_reader.read(1))
        try:
            while True:
                reading = asyncio.ensure_future(upstream_reader.read(CHUNK))
                done, _ = await asyncio.wait(
                    {reading, hang_up}, return_when=asyncio.FIRST_COMPLETED
                )
                if reading not in done:
                    reading.cancel()
                    break
                chunk = reading.result()
                if not chunk:
                    break
                client_writer.write(chunk)
                await client_writer.drain()
        finally:
            hang_up.cancel()
            upstream_writer.close()

    async def refuse(self, writer, status: int, reason: str) -> None:
        body = json.dumps({"message": f"refused by the engine guard: {reason}"}).encode()
        words = {400: "Bad Request", 403: "Forbidden", 411: "Length Required",
                 413: "Payload Too Large"}  # fmt: skip
        writer.write(
            f"HTTP/1.1 {status} {words[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()


def _json(raw: bytes) -> dict:
    try:
        found = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


async def serve(guard: Guard, host: str, port: int, ready=None) -> None:
    server = await asyncio.start_server(guard.handle, host, port, limit=MAX_HEAD)
    logger.info("engine guard on %s:%s for %s", host, port, guard.upstream)
    if ready is not None:
        ready()
    async with server:
        await server.serve_forever()
