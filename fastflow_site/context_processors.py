from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def site(request: HttpRequest) -> dict:
    """Site-wide switches templates show or hide things by."""
    return {
        "password_login": settings.PASSWORD_LOGIN,
        "join_requests_enabled": settings.JOIN_REQUESTS,
    }
