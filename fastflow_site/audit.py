"""Writing the audit log: `record(action, obj)` from any entry point (view, admin, API,
command). Who and from where come from the request being served, which a small middleware
keeps in a context variable, so callers deep in the admin need not pass it along."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

from django.db import models
from django.http import HttpRequest, HttpResponse

from fastflow_site.models import AuditEntry

Action = AuditEntry.Action
_current_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar(
    "fastflow_audit_request", default=None
)
# Entry points that are not a browser say so (the API sets "api", commands "command").
_current_via: contextvars.ContextVar[str] = contextvars.ContextVar("fastflow_audit_via", default="")
# A management command acting for a person names them (commands/--as).
_current_actor: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "fastflow_audit_actor", default=None
)


class AuditContextMiddleware:
    """Remembers the request being served for `record()`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


@contextlib.contextmanager
def acting_as(actor, via: str = "command") -> Iterator[None]:
    """Entries recorded inside name `actor` (commands and the API, which have no session)."""
    tokens = (_current_actor.set(actor), _current_via.set(via))
    try:
        yield
    finally:
        _current_actor.reset(tokens[0])
        _current_via.reset(tokens[1])


def is_acting() -> bool:
    """Whether a person is behind the code running now (a request or a command for them)."""
    request = _current_request.get()
    return _current_actor.get() is not None or (
        request is not None and getattr(getattr(request, "user", None), "is_authenticated", False)
    )


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: behind a proxy, the proxy is expected to set it (daphne's
    # --proxy-headers does); a client-sent X-Forwarded-For is never trusted.
    return request.META.get("REMOTE_ADDR") or None


def _describe(obj: Any) -> tuple[str, str, str]:
    if obj is None:
        return "", "", ""
    if isinstance(obj, models.Model):
        public = getattr(obj, "public_id", None) or getattr(obj, "name", None) or obj.pk
        return obj._meta.label_lower, str(public), str(obj)[:300]
    return type(obj).__name__.lower(), "", str(obj)[:300]


def record(
    action: str,
    obj: Any = None,
    *,
    actor=None,
    request: HttpRequest | None = None,
    via: str = "",
    **details: Any,
) -> AuditEntry:
    """Append one entry: `actor` (default: the request's person) did `action` to `obj`."""
    request = request or _current_request.get()
    actor = actor or _current_actor.get()
    if actor is None and request is not None:
        user = getattr(request, "user", None)
        actor = user if getattr(user, "is_authenticated", False) else None
    object_type, object_id, object_repr = _describe(obj)
    if not via:
        via = _current_via.get() or _via_of(request)
    return AuditEntry.objects.create(
        actor=actor,
        actor_name=_name_of(actor),
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_repr=object_repr,
        ip_address=client_ip(request) if request is not None else None,
        user_agent=(request.headers.get("User-Agent", "")[:300] if request is not None else ""),
        via=via,
        details={key: value for key, value in details.items() if value not in (None, "")},
    )


def _via_of(request: HttpRequest | None) -> str:
    if request is None:
        return "command"
    if request.path.startswith("/admin/"):
        return "admin"
    if request.path.startswith("/api/"):
        return "api"
    return "web"


def _name_of(actor) -> str:
    if actor is None:
        return ""
    email = getattr(actor, "email", "")
    username = actor.get_username()
    return f"{username} <{email}>" if email and email != username else username
