"""GitHub's and Google's servers cannot be reached here: their HTTP answers are given
locally, at the edge (the requests session allauth uses), and everything else is real."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlparse

import jwt
import requests
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.test import Client

from fastflow_site.models import SignInProvider


class FakeProviders(requests.adapters.BaseAdapter):
    """Answers GitHub's and Google's OAuth and API calls with the person set in `people`."""

    def __init__(self) -> None:
        super().__init__()
        self.identity: dict = {}
        self.calls: list[str] = []

    def send(self, request, **kwargs):
        self.calls.append(f"{request.method} {request.url}")
        url = urlparse(request.url)
        body = self.answer(url.netloc, url.path, request)
        response = requests.Response()
        response.status_code = 200 if body is not None else 404
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        return response

    def answer(self, host: str, path: str, request):
        who = self.identity
        if (host, path) == ("github.com", "/login/oauth/access_token"):
            return {"access_token": "gh-token", "token_type": "bearer", "scope": "user:email"}
        if (host, path) == ("api.github.com", "/user"):
            return {"id": who["uid"], "login": who["login"], "name": who["name"], "email": None}
        if (host, path) == ("api.github.com", "/user/emails"):
            return [
                {"email": email, "verified": verified, "primary": index == 0}
                for index, (email, verified) in enumerate(who["emails"])
            ]
        if (host, path) == ("oauth2.googleapis.com", "/token"):
            client_id = parse_qs(request.body)["client_id"][0]
            email, verified = who["emails"][0]
            claims = {
                "iss": "https://accounts.google.com",
                "aud": client_id,
                "sub": str(who["uid"]),
                "email": email,
                "email_verified": verified,
                "name": who["name"],
                "iat": int(time.time()),
                "exp": int(time.time()) + 600,
            }
            id_token = jwt.encode(claims, "not-checked-after-a-direct-exchange", "HS256")
            return {"access_token": "g-token", "expires_in": 3600, "id_token": id_token}
        return None

    def close(self) -> None:
        pass


def install(monkeypatch) -> FakeProviders:
    """GitHub and Google sign-in providers (from the admin) whose servers answer locally."""
    for kind, name in (("github", "GitHub"), ("google", "Google")):
        provider = SignInProvider(kind=kind, name=name, client_id=f"{kind}-client")
        provider.set_secret(f"{kind}-secret")
        provider.save()
    fake = FakeProviders()

    def session(adapter):
        sess = requests.Session()
        sess.mount("https://", fake)
        return sess

    monkeypatch.setattr(DefaultSocialAccountAdapter, "get_requests_session", session)
    return fake


def sign_in(
    client: Client,
    fake: FakeProviders,
    provider: str,
    emails: list[tuple[str, bool]],
    *,
    uid: int = 1,
    login: str = "alice",
    process: str = "login",
):
    """The whole redirect dance of `provider`, as a browser would; the last response."""
    fake.identity = {"uid": uid, "login": login, "name": login.title(), "emails": emails}
    start = client.post(f"/accounts/{provider}/login/", {"process": process})
    assert start.status_code == 302, start.content
    state = parse_qs(urlparse(start.url).query)["state"][0]
    return client.get(f"/accounts/{provider}/login/callback/", {"code": "the-code", "state": state})
