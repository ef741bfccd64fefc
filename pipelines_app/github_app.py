"""GitHub App authentication: a JWT signed with the app's private key is exchanged for a
short-lived installation token, which is cached and refreshed shortly before it expires."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from datetime import datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from django.conf import settings

# Refresh this long before GitHub's expiry, so a sync never starts with a dying token.
REFRESH_MARGIN_SECONDS = 120

_cache: dict[str, tuple[str, float]] = {}
_lock = threading.Lock()


class GitHubAppError(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_jwt(app_id: str, private_key_pem: bytes, now: float | None = None) -> str:
    """The app's JWT (RS256), valid for 9 minutes (GitHub allows 10), backdated 60 s for
    clock drift."""
    now = int(now if now is not None else time.time())
    header = {"alg": "RS256", "typ": "JWT"}
    payload = {"iat": now - 60, "exp": now + 540, "iss": str(app_id)}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def installation_token() -> str:
    app_id, installation = settings.GITHUB_APP_ID, settings.GITHUB_INSTALLATION_ID
    if not (app_id and installation and settings.GITHUB_PRIVATE_KEY_PATH):
        raise GitHubAppError(
            "GitHub App authentication needs GITHUB_APP_ID, GITHUB_INSTALLATION_ID and "
            "GITHUB_PRIVATE_KEY_PATH."
        )
    with _lock:
        cached = _cache.get(installation)
        if cached and cached[1] - REFRESH_MARGIN_SECONDS > time.time():
            return cached[0]
        try:
            with open(settings.GITHUB_PRIVATE_KEY_PATH, "rb") as key_file:
                private_key = key_file.read()
        except OSError as problem:
            raise GitHubAppError(f"GITHUB_PRIVATE_KEY_PATH cannot be read: {problem}") from None
        api = settings.GITHUB_API_URL.rstrip("/")
        request = urllib.request.Request(  # noqa: S310 - the configured API's URL
            f"{api}/app/installations/{installation}/access_tokens",
            method="POST",
            headers={
                "Authorization": f"Bearer {app_jwt(app_id, private_key)}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                answer = json.load(response)
        except OSError as problem:
            raise GitHubAppError(f"GitHub refused the installation token: {problem}") from None
        token = answer["token"]
        expires = datetime.fromisoformat(answer["expires_at"].replace("Z", "+00:00"))
        _cache[installation] = (token, expires.timestamp())
        return token
