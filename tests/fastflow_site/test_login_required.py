"""Secure by default: no page is readable without logging in, including future ones."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

pytestmark = pytest.mark.django_db

# Before sign-in: allauth's entrance (sign-in, provider redirects and callbacks, the
# "ask an admin" pages), an invitation link, asking to join.
PUBLIC_PREFIXES = ("/accounts/",)
PUBLIC = {"invitation", "join_request", "health", "health_ready"}
# Authenticated by a key instead of a login (tests/pipelines_app/test_webhooks.py).
TOKEN_AUTHENTICATED = {"webhook", "git_push", "metrics"}
API_PREFIX = ("/api/",)  # a token or a session; 401 otherwise (tests/fastflow_site/test_api.py)


def every_url(resolver=None, prefix="") -> list[tuple[str, str]]:
    """(name, path) of every route, with sample values for its arguments."""
    resolver = resolver or get_resolver()
    found = []
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found += every_url(pattern, route)
        elif isinstance(pattern, URLPattern):
            path = route.lstrip("^").rstrip("$").replace("\\Z", "").replace("\\", "")
            for placeholder in (
                "<str:name>",
                "<str:config_id>",
                "<str:prefix>",
                "<str:pipeline>",
                "<path:object_id>",
                "<uidb64>",
                "<token>",
            ):
                path = path.replace(placeholder, "x")
            path = path.replace("<int:pk>", "1")
            path = path.replace("<uuid:public_id>", "00000000-0000-4000-8000-000000000000")
            path = path.replace("(?P<app_label>auth|pipelines_app|runs_app)/", "pipelines_app/")
            if "(?P" in path or "<" in path:
                continue  # admin regexes are covered by the admin test
            found.append((pattern.name or "", "/" + path))
    return found


def test_every_page_redirects_anonymous_people_to_login(client, pipelines_dir):
    urls = [
        (name, path)
        for name, path in every_url()
        if name not in PUBLIC | TOKEN_AUTHENTICATED
        and not path.startswith(PUBLIC_PREFIXES + API_PREFIX)
    ]
    assert len(urls) > 10
    for name, path in urls:
        response = client.get(path)
        assert response.status_code in (302, 301), (name, path, response.status_code)
        location = response.headers["Location"]
        # (the admin's own sign-in address sends on to the one sign-in page)
        assert location.startswith((reverse("account_login"), "/admin/login/", path + "/")), (
            path,
            location,
        )


def test_the_sign_in_page_is_public(client):
    response = client.get(reverse("account_login"))
    assert response.status_code == 200
    assert b"Sign in to Fast-Flow" in response.content


def test_signing_in_with_a_password(client, viewer, pipelines_dir):
    response = client.post(reverse("account_login"), {"login": "vic", "password": "pw-vic"})
    assert response.status_code == 302
    assert client.get(reverse("pipelines_app:list")).status_code == 200


def test_a_wrong_password_is_refused(client, viewer):
    response = client.post(reverse("account_login"), {"login": "vic", "password": "nope"})
    assert response.status_code == 200
    assert b"not correct" in response.content


def test_the_admin_refuses_people_without_staff_rights(viewer_client):
    assert viewer_client.get("/admin/", follow=True).status_code == 403


def test_the_admin_has_no_password_form_of_its_own(client):
    response = client.get("/admin/login/")
    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login"))


def test_the_webhook_needs_its_key_instead_of_a_login(client, pipelines_dir):
    response = client.post(reverse("webhook", args=["x"]))
    assert response.status_code == 404
    assert response.json() == {"error": "No such pipeline, or the key is wrong."}
