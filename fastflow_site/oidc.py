"""OpenID Connect addresses (no Django here: the settings use it too)."""

from __future__ import annotations

DISCOVERY = "/.well-known/openid-configuration"


def discovery_url(server_url: str) -> str:
    """allauth reads the configuration at the URL given; people give the issuer."""
    server_url = server_url.rstrip("/")
    return server_url if server_url.endswith(DISCOVERY) else server_url + DISCOVERY
