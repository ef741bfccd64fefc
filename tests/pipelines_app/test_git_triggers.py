"""What starts a sync: GitHub's push webhook (signed), the Sync now button, and the
GitHub App token it may need (against a local stub of GitHub's API, the only mock)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.urls import reverse
from django_q.models import OrmQ

from pipelines_app import github_app
from pipelines_app.models import GitSource, Sync

pytestmark = pytest.mark.django_db

SECRET = "push-secret-123"


@pytest.fixture
def source(settings):
    settings.GIT_REPO_URL = "https://github.com/org/pipelines.git"
    settings.GIT_BRANCH = "main"
    settings.GIT_WEBHOOK_SECRET = SECRET
    return GitSource.load()


def push(client, body: dict, secret: str = SECRET, event: str = "push"):
    raw = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return client.post(
        reverse("git_push"),
        data=raw,
        content_type="application/json",
        headers={"X-Hub-Signature-256": signature, "X-GitHub-Event": event},
    )


def queued_syncs() -> int:
    return OrmQ.objects.count()


def test_a_signed_push_to_the_branch_requests_a_sync(client, source):
    response = push(client, {"ref": "refs/heads/main", "after": "abc"})
    assert response.status_code == 202 and response.json()["sync"] == "requested"
    assert queued_syncs() == 1


def test_a_bad_signature_is_refused(client, source):
    response = push(client, {"ref": "refs/heads/main"}, secret="wrong")
    assert response.status_code == 403
    assert queued_syncs() == 0


def test_another_branch_and_other_events_are_ignored(client, source):
    other = push(client, {"ref": "refs/heads/feature"})
    assert other.status_code == 202 and "is not main" in other.json()["ignored"]
    assert push(client, {"zen": "hi"}, event="ping").json() == {"ok": "pong"}
    assert push(client, {}, event="issues").status_code == 202
    assert queued_syncs() == 0


def test_without_a_secret_push_webhooks_are_off(client, settings, source):
    settings.GIT_WEBHOOK_SECRET = ""
    assert push(client, {"ref": "refs/heads/main"}).status_code == 404


def test_the_sync_page_and_its_button(admin_client, source):
    Sync.objects.create(
        trigger=Sync.Trigger.PUSH, status=Sync.Status.FAILED, error="git fetch failed: boom"
    )
    page = admin_client.get(reverse("sync")).content.decode()
    assert "https://github.com/org/pipelines.git" in page and "git fetch failed: boom" in page
    response = admin_client.post(reverse("sync_now"))
    assert response.status_code == 302 and queued_syncs() == 1


def test_the_sync_page_needs_permission(client, stranger, viewer, operator, source):
    client.force_login(stranger)
    assert client.get(reverse("sync")).status_code == 403
    for person in (viewer, operator):  # they read the repository page; admins sync
        client.force_login(person)
        assert client.get(reverse("sync")).status_code == 200
        assert client.post(reverse("sync_now")).status_code == 403


def test_without_a_repository_the_page_says_so(admin_client, settings):
    settings.GIT_REPO_URL = ""
    page = admin_client.get(reverse("sync")).content.decode()
    assert "No repository is configured" in page


def test_a_url_with_credentials_is_shown_without_them(admin_client, settings):
    settings.GIT_REPO_URL = "https://user:hunter2hunter2@example.com/repo.git"
    page = admin_client.get(reverse("sync")).content.decode()
    assert "hunter2" not in page and "https://***@example.com/repo.git" in page


# --- GitHub App --------------------------------------------------------------------------


class GitHubStub(BaseHTTPRequestHandler):
    """POST /app/installations/<id>/access_tokens: checks the JWT, returns a token."""

    public_key = None
    calls: list[dict] = []
    expires_in = 3600

    def do_POST(self) -> None:
        token = self.headers["Authorization"].removeprefix("Bearer ")
        header, payload, signature = token.split(".")
        padded = signature + "=" * (-len(signature) % 4)
        self.public_key.verify(
            base64.urlsafe_b64decode(padded),
            f"{header}.{payload}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        self.calls.append({"path": self.path, "claims": claims})
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + self.expires_in))
        body = json.dumps({"token": f"ghs_token{len(self.calls)}", "expires_at": expires})
        self.send_response(201)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def github(settings, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "app.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    GitHubStub.public_key = key.public_key()
    GitHubStub.calls = []
    server = HTTPServer(("127.0.0.1", 0), GitHubStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.GITHUB_APP_ID = "4242"
    settings.GITHUB_INSTALLATION_ID = "99"
    settings.GITHUB_PRIVATE_KEY_PATH = str(pem)
    settings.GITHUB_API_URL = f"http://127.0.0.1:{server.server_port}"
    github_app._cache.clear()
    yield GitHubStub
    server.shutdown()


def test_the_app_jwt_buys_an_installation_token_which_is_cached(github):
    assert github_app.installation_token() == "ghs_token1"
    assert github_app.installation_token() == "ghs_token1"  # cached
    (call,) = github.calls
    assert call["path"] == "/app/installations/99/access_tokens"
    assert call["claims"]["iss"] == "4242"
    assert call["claims"]["exp"] - call["claims"]["iat"] <= 600


def test_a_token_about_to_expire_is_refreshed(github):
    github.expires_in = 60  # inside the refresh margin
    assert github_app.installation_token() == "ghs_token1"
    assert github_app.installation_token() == "ghs_token2"
    github.expires_in = 3600


def test_missing_app_settings_say_what_is_needed(settings):
    settings.GITHUB_APP_ID = ""
    with pytest.raises(github_app.GitHubAppError, match="GITHUB_APP_ID"):
        github_app.installation_token()


def test_the_interval_asks_for_a_sync_once_per_interval(source, settings):
    from pipelines_app import gitsync

    settings.AUTO_SYNC_INTERVAL = 60
    gitsync._last_interval_request = 0.0
    gitsync.request_sync_when_due()
    assert queued_syncs() == 1
    gitsync.request_sync_when_due()  # asked already: the task has not started yet
    assert queued_syncs() == 1
    gitsync._last_interval_request = 0.0
    Sync.objects.create(trigger=Sync.Trigger.INTERVAL, status=Sync.Status.SUCCEEDED)
    gitsync.request_sync_when_due()  # a sync just started: not due yet
    assert queued_syncs() == 1


def test_a_sync_with_the_github_app_sends_the_installation_token(github, settings, tmp_path):
    from pipelines_app import gitsync
    from tests.pipelines_app.test_gitsync import GitHTTPStub

    settings.DATA_DIR = tmp_path / "data"
    git_server = HTTPServer(("127.0.0.1", 0), GitHTTPStub)
    threading.Thread(target=git_server.serve_forever, daemon=True).start()
    GitHTTPStub.seen = []
    GitSource.objects.create(
        url=f"http://127.0.0.1:{git_server.server_port}/org/repo.git",
        auth=GitSource.Auth.GITHUB_APP,
    )
    try:
        record = gitsync.sync(Sync.Trigger.CLI)
    finally:
        git_server.shutdown()
    basic = base64.b64encode(b"x-access-token:ghs_token1").decode()
    assert f"Basic {basic}" in GitHTTPStub.seen
    assert record.status == Sync.Status.FAILED and "ghs_token1" not in record.error


def test_the_admin_keeps_credentials_write_only(admin_client, settings):
    settings.GIT_REPO_URL = ""
    add = admin_client.post(
        reverse("admin:pipelines_app_gitsource_add"),
        {
            "url": "https://github.com/org/private.git",
            "branch": "main",
            "subdir": "pipelines",
            "auth": "token",
            "new_token": "ghp_admin_typed_token_123",
            "new_webhook_secret": "hook-secret-456",
            "ssh_known_hosts": "",
        },
    )
    assert add.status_code == 302
    source = GitSource.load()
    assert source.secret("token") == "ghp_admin_typed_token_123"
    assert source.secret("webhook_secret") == "hook-secret-456"
    change_url = reverse("admin:pipelines_app_gitsource_change", args=[source.pk])
    page = admin_client.get(change_url).content.decode()
    assert "ghp_admin_typed_token_123" not in page and "hook-secret-456" not in page
    assert source.token_encrypted not in page
    # Saving without typing keeps what is stored.
    admin_client.post(
        change_url,
        {"url": source.url, "branch": "main", "subdir": "pipelines", "auth": "token"},
    )
    assert GitSource.load().secret("token") == "ghp_admin_typed_token_123"
    response = admin_client.post(
        reverse("admin:pipelines_app_gitsource_changelist"),
        {"action": "make_deploy_key", "_selected_action": [source.pk]},
        follow=True,
    )
    source.refresh_from_db()
    assert source.auth == "ssh" and source.ssh_public_key.startswith("ssh-ed25519 ")
    assert source.ssh_public_key in response.content.decode()
    page = admin_client.get(reverse("sync")).content.decode()
    assert source.ssh_public_key in page  # shown to copy


def test_the_pipelines_page_says_what_git_deployed(admin_client, source):
    Sync.objects.create(
        trigger=Sync.Trigger.PUSH,
        status=Sync.Status.SUCCEEDED,
        commit="0123456789abcdef0123",
        message="Tune the nightly job",
    )
    page = admin_client.get(reverse("pipelines_app:list")).content.decode()
    line = page.split('id="latest-sync"')[1].split("</p>")[0]
    assert "0123456789ab" in line and "Tune the nightly job" in line
    Sync.objects.create(trigger=Sync.Trigger.PUSH, status=Sync.Status.FAILED, error="boom")
    page = admin_client.get(reverse("pipelines_app:list")).content.decode()
    assert "the last sync failed" in page
