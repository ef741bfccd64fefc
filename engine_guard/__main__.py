"""python -m engine_guard — settings from the environment:

GUARD_LISTEN          host:port to listen on (0.0.0.0:2375)
GUARD_UPSTREAM        the engine's socket (/var/run/docker.sock)
GUARD_ALLOWED_MOUNTS  host paths runs may bind, "path:ro" or "path:rw", comma-separated
GUARD_IMAGES          images containers may be made from, comma-separated (empty: any)
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from engine_guard.policy import Allowance
from engine_guard.server import Guard, serve


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    host, _, port = os.environ.get("GUARD_LISTEN", "0.0.0.0:2375").rpartition(":")
    try:
        allowances = Allowance.parse(os.environ.get("GUARD_ALLOWED_MOUNTS", ""))
    except ValueError as problem:
        sys.exit(f"GUARD_ALLOWED_MOUNTS: {problem}")
    images = {i.strip() for i in os.environ.get("GUARD_IMAGES", "").split(",") if i.strip()}
    guard = Guard(os.environ.get("GUARD_UPSTREAM", "/var/run/docker.sock"), allowances, images)
    asyncio.run(serve(guard, host or "0.0.0.0", int(port)))  # noqa: S104


if __name__ == "__main__":
    main()
