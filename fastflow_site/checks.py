"""Start-up checks for people settings that would lock everybody out."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Warning, register


@register()
def a_way_to_sign_in(app_configs, **kwargs) -> list[Warning]:
    configured = settings.GITHUB_CLIENT_ID or settings.GOOGLE_CLIENT_ID or settings.OIDC_CLIENT_ID
    if settings.PASSWORD_LOGIN or configured:
        return []
    return [
        Warning(
            "PASSWORD_LOGIN is false and no sign-in provider is set in the environment.",
            hint="Set GITHUB_CLIENT_ID, GOOGLE_CLIENT_ID or OIDC_CLIENT_ID (with their "
            "secrets), or add a sign-in provider in the admin before switching passwords off.",
            id="fastflow.W001",
        )
    ]
