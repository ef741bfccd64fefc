"""What a service away looks like: the database or Redis restarting, failing over, or not
there yet. The worker's loops (runs_app.worker.loops) say it in one line and try again; the
web answers 503 "back in a moment" (fastflow_site.operations), never a traceback."""

from __future__ import annotations

import psycopg
import redis
from django.db import InterfaceError, OperationalError

SERVICE_AWAY = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    redis.ConnectionError,
    redis.TimeoutError,
)
