"""The Docker engine as the executors see it: one connection, one translation of its
errors, and the few calls docker-py makes public no way to do.

Every call an executor makes to the engine either answers, raises what docker-py says about
the request (APIError, NotFound: the engine answered), or finds the engine away — a refused
or broken connection, a timeout. `reachable()` turns the last kind into EngineUnavailable,
the one error the worker knows how to wait out (the run is released, its container goes on).

docker-py's private parts are used here and nowhere else, each for a reason:
- `stream()`: a container's log with the stdout/stderr frame headers intact, and its stats,
  as a raw streaming response with our own timeout (the public `logs()` merges the two
  streams and `stats()` offers no timeout);
- `update_container()`: the engine's update with `NanoCpus`, which docker-py's
  `update_container` does not pass on;
- `shutdown()`: the response's socket, shut down so that a thread blocked reading it wakes
  (closing the response alone leaves the reader waiting).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import docker
import requests
import urllib3
from django.conf import settings
from docker.errors import DockerException

from runs_app.executors.base import EngineUnavailable

# What an unreachable engine looks like through docker-py.
ENGINE_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    ConnectionError,
    socket.timeout,
)
# What a stream that ends early raises (closed, timed out, cut off): read it again.
STREAM_ERRORS = (*ENGINE_ERRORS, requests.exceptions.RequestException, urllib3.exceptions.HTTPError)


@contextlib.contextmanager
def reachable(what: str = "cannot be reached", also: tuple = ()) -> Iterator[None]:
    """Engine errors inside (and `also` these) become EngineUnavailable, "The Docker engine
    <what> (…)"; what the engine answered (APIError, NotFound) passes through."""
    try:
        yield
    except (*ENGINE_ERRORS, *also) as exc:
        raise EngineUnavailable(f"The Docker engine {what} ({exc})") from exc


def host() -> str:
    """The engine's address, as people configure it."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect() -> docker.DockerClient:
    """A client for the engine DOCKER_HOST names (or the local socket)."""
    try:
        return docker.from_env(timeout=settings.DOCKER_API_TIMEOUT)
    except DockerException as exc:
        raise EngineUnavailable(f"The Docker engine cannot be reached ({exc})") from exc


def stream(
    api: docker.APIClient,
    path: str,
    container_id: str,
    params: dict,
    timeout: float | None = None,
) -> requests.Response:
    """A streaming GET of one container's (or service's) endpoint (`/containers/{0}/logs`,
    `…/stats`, `/services/{0}/logs`), with `timeout` or DOCKER_STREAM_TIMEOUT as its read
    timeout (none by default: a run may be quiet for hours). APIError / NotFound when the
    engine refuses it."""
    response = api._get(
        api._url(path, container_id),
        params=params,
        stream=True,
        timeout=timeout or settings.DOCKER_STREAM_TIMEOUT,
    )
    api._raise_for_status(response)
    return response


def update_container(api: docker.APIClient, container_id: str, update: dict) -> None:
    """The engine's container update with any of its fields (`Memory`, `NanoCpus`, …)."""
    response = api._post_json(api._url("/containers/{0}/update", container_id), data=update)
    api._raise_for_status(response)


def shutdown(response: requests.Response) -> None:
    """Close a streaming response so that a thread blocked reading it wakes up."""
    try:
        raw_socket = response.raw._fp.fp.raw
        getattr(raw_socket, "_sock", raw_socket).shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        pass
    with contextlib.suppress(Exception):  # closing a response that is already broken
        response.close()


def read_exactly(raw, length: int) -> bytes:
    """`length` bytes of a raw stream, fewer only where it ended."""
    data = b""
    while len(data) < length:
        try:
            chunk = raw.read(length - len(data))
        except (AttributeError, ValueError, OSError) as exc:
            # The response was closed under the reader (the follower ends, or the safety
            # net closed a hanging stream): urllib3 then fails in various ways.
            raise urllib3.exceptions.ProtocolError("the stream was closed") from exc
        if not chunk:
            break
        data += chunk
    return data


def docker_timestamp(raw: str) -> tuple[str, datetime]:
    """Docker's RFC 3339 time (trailing zeros trimmed) as a fixed-width string and a datetime.

    Fixed width (9 fraction digits) makes stored timestamps compare correctly as text.
    """
    seconds, _, fraction = raw.rstrip("Z").partition(".")
    fraction = (fraction + "000000000")[:9]
    moment = datetime.fromisoformat(seconds).replace(tzinfo=UTC) + timedelta(
        microseconds=int(fraction[:6])
    )
    return f"{seconds}.{fraction}Z", moment


def docker_since(timestamp: str) -> str:
    """A stored timestamp as the `since` of docker's log API, to the nanosecond."""
    seconds, _, fraction = timestamp.rstrip("Z").partition(".")
    epoch = int(datetime.fromisoformat(seconds).replace(tzinfo=UTC).timestamp())
    return f"{epoch}.{(fraction + '000000000')[:9]}"
