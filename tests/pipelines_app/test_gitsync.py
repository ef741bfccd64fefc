"""Git sync against real repositories made in the test: a bare repository on disk is the
remote; commits, branches and force-pushes happen in a second clone."""

from __future__ import annotations

import io
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from pipelines_app import gitsync
from pipelines_app.models import GitSource, Pipeline, Schedule, Sync
from runs_app.models import PipelineRun

pytestmark = pytest.mark.django_db


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return result.stdout.strip()


class Remote:
    """A bare repository and an author's clone that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "author"
        git("init", "--bare", "--initial-branch=main", str(self.bare), cwd=root)
        git("clone", str(self.bare), str(self.work), cwd=root)
        git("config", "user.name", "Ada Author", cwd=self.work)
        git("config", "user.email", "ada@example.com", cwd=self.work)
        git("checkout", "-B", "main", cwd=self.work)

    def commit(self, files: dict[str, str | None], message: str, branch: str = "main") -> str:
        for name, content in files.items():
            path = self.work / name
            if content is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        git("add", "-A", cwd=self.work)
        git("commit", "-m", message, cwd=self.work)
        git("push", "--force", "origin", f"HEAD:{branch}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def remote(tmp_path, settings) -> Remote:
    settings.DATA_DIR = tmp_path / "data"
    settings.GIT_REPO_URL = str(tmp_path / "remote.git")
    settings.GIT_BRANCH = "main"
    settings.PIPELINES_SUBDIR = ""
    return Remote(tmp_path)


def synced() -> Sync:
    record = gitsync.sync(Sync.Trigger.CLI)
    assert record is not None
    assert record.status == Sync.Status.SUCCEEDED, record.error
    return record


def test_the_first_sync_clones_deploys_and_discovers(remote):
    head = remote.commit(
        {"hello/main.py": "print('v1')\n", "hello/pipeline.json": '{"schedule_cron": "0 3 * * *"}'},
        "First pipeline\n\nwith a body",
    )
    record = synced()
    assert record.commit == head and record.author == "Ada Author <ada@example.com>"
    assert record.message == "First pipeline\n\nwith a body"
    assert record.summary.startswith("1 new")
    assert gitsync.live_commit() == head
    hello = Pipeline.objects.get(name="hello")
    assert Path(hello.folder_path) == gitsync.current_link() / "hello"
    assert (Path(hello.folder_path) / "main.py").read_text() == "print('v1')\n"
    assert Schedule.objects.get(pipeline=hello).cron == "0 3 * * *"


def test_an_update_changes_code_pipelines_and_schedules(remote):
    remote.commit(
        {"a/main.py": "print(1)\n", "a/pipeline.json": '{"schedule_cron": "0 3 * * *"}'}, "one"
    )
    synced()
    head = remote.commit(
        {
            "a/main.py": "print(2)\n",
            "a/pipeline.json": '{"schedule_interval_seconds": 60}',
            "b/main.py": "print('new')\n",
        },
        "two",
    )
    record = synced()
    assert record.commit == head and record.summary.startswith("1 new, 1 changed")
    a = Pipeline.objects.get(name="a")
    assert (Path(a.folder_path) / "main.py").read_text() == "print(2)\n"
    schedule = Schedule.objects.get(pipeline=a)
    assert schedule.cron == "" and schedule.interval_seconds == 60
    assert Pipeline.objects.filter(name="b").exists()


def test_the_remote_wins_over_local_changes_and_rewritten_history(remote):
    remote.commit({"a/main.py": "print(1)\n"}, "one")
    synced()
    clone = gitsync.git_dir() / "repo"
    (clone / "a" / "main.py").write_text("local edit\n")
    (clone / "stray.txt").write_text("untracked\n")
    git("reset", "--hard", "HEAD", cwd=remote.work)
    git("commit", "--amend", "-m", "rewritten", cwd=remote.work)
    head = remote.commit({"a/main.py": "print('forced')\n"}, "after a force-push")
    record = synced()
    assert record.commit == head
    assert (gitsync.current_link() / "a" / "main.py").read_text() == "print('forced')\n"
    assert not (clone / "stray.txt").exists()


def test_a_removed_pipeline_becomes_missing_with_its_history(remote):
    remote.commit({"a/main.py": "print(1)\n", "b/main.py": "print(2)\n"}, "two pipelines")
    synced()
    b = Pipeline.objects.get(name="b")
    run = PipelineRun.objects.create(pipeline=b, status=PipelineRun.Status.SUCCEEDED)
    remote.commit({"b/main.py": None}, "remove b")
    synced()
    b.refresh_from_db()
    assert b.state == Pipeline.State.MISSING and b.runs.get() == run


def test_a_started_run_keeps_its_tree_while_syncs_switch_and_clean_up(remote):
    first = remote.commit({"a/main.py": "print('old')\n"}, "one")
    synced()
    folder_of_a_running_run = (gitsync.current_link() / "a").resolve()  # what a run pins
    PipelineRun.objects.create(
        pipeline=Pipeline.objects.get(name="a"),
        status=PipelineRun.Status.RUNNING,
        git_commit=gitsync.commit_of(folder_of_a_running_run),
    )
    assert gitsync.commit_of(folder_of_a_running_run) == first
    remote.commit({"a/main.py": "print('new')\n"}, "two")
    synced()
    third = remote.commit({"a/main.py": "print('newer')\n"}, "three")
    synced()
    # The running run's tree is intact (in use), the live one is the newest.
    assert (folder_of_a_running_run / "main.py").read_text() == "print('old')\n"
    assert (gitsync.current_link() / "a" / "main.py").read_text() == "print('newer')\n"
    PipelineRun.objects.update(status=PipelineRun.Status.SUCCEEDED)
    remote.commit({"a/main.py": "print('newest')\n"}, "four")
    synced()
    kept = {path.name for path in gitsync.checkouts_dir().iterdir()}
    assert first not in kept and third in kept and len(kept) == 2  # live + the one before


def test_the_switch_is_one_rename(remote, monkeypatch):
    """`current` is replaced with os.replace (atomic), never removed and re-made."""
    remote.commit({"a/main.py": "print(1)\n"}, "one")
    synced()
    seen = []
    real_replace = gitsync.os.replace

    def spy(source, target):
        seen.append((Path(source).name, Path(target).name, gitsync.current_link().exists()))
        real_replace(source, target)

    monkeypatch.setattr(gitsync.os, "replace", spy)
    remote.commit({"a/main.py": "print(2)\n"}, "two")
    synced()
    assert seen == [(f"current.{gitsync.os.getpid()}", "current", True)]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"GIT_BRANCH": "no-such-branch"}, "no-such-branch"),
        ({"GIT_REPO_URL": "/nowhere/at/all.git"}, "'/nowhere/at/all.git' does not appear"),
    ],
)
def test_a_failed_sync_says_why_and_keeps_the_live_tree(remote, settings, change, expected):
    head = remote.commit({"a/main.py": "print(1)\n"}, "one")
    synced()
    for name, value in change.items():
        setattr(settings, name, value)
    record = gitsync.sync(Sync.Trigger.CLI)
    assert record.status == Sync.Status.FAILED
    assert expected in record.error, record.error
    assert gitsync.live_commit() == head
    assert Pipeline.objects.get(name="a").state == Pipeline.State.PRESENT


def test_the_command_prints_the_deployed_commit_and_fails_loudly(remote, settings):
    head = remote.commit({"a/main.py": "print(1)\n"}, "Deploy me")
    out = io.StringIO()
    call_command("sync", stdout=out)
    assert f"synced main at {head[:12]} — Deploy me (Ada Author" in out.getvalue()
    settings.GIT_BRANCH = "gone"
    with pytest.raises(CommandError, match="sync failed"):
        call_command("sync", stdout=io.StringIO())


def test_requests_during_a_sync_become_one_more_sync(remote, monkeypatch):
    remote.commit({"a/main.py": "print(1)\n"}, "one")
    real_sync_once = gitsync._sync_once
    runs = []

    def sync_once(trigger, user):
        runs.append(trigger)
        if len(runs) == 1:  # three pushes arrive while the first sync runs
            assert [gitsync.sync(Sync.Trigger.PUSH) for _ in range(3)] == [None, None, None]
        return real_sync_once(trigger, user)

    monkeypatch.setattr(gitsync, "_sync_once", sync_once)
    record = gitsync.sync(Sync.Trigger.CLI)
    assert runs == [Sync.Trigger.CLI, Sync.Trigger.PUSH]  # one more, not three
    assert record.status == Sync.Status.SUCCEEDED and record.trigger == Sync.Trigger.PUSH
    assert Sync.objects.count() == 2


# --- credentials ------------------------------------------------------------------------------


class GitHTTPStub(BaseHTTPRequestHandler):
    """Records the Authorization header git sends, then refuses it."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        self.send_response(403)
        self.end_headers()
        self.wfile.write(b"denied")

    def log_message(self, *args) -> None:
        pass


def test_a_token_travels_per_command_and_never_lands_in_config_or_errors(
    settings, tmp_path, caplog
):
    settings.DATA_DIR = tmp_path / "data"
    server = HTTPServer(("127.0.0.1", 0), GitHTTPStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = "ghp_supersecrettoken1234567890"
    source = GitSource(url=f"http://127.0.0.1:{server.server_port}/org/repo.git", branch="main")
    source.auth = GitSource.Auth.TOKEN
    source.set_secret("token", token)
    source.save()
    try:
        record = gitsync.sync(Sync.Trigger.CLI)
    finally:
        server.shutdown()
    assert record.status == Sync.Status.FAILED
    import base64

    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    assert f"Basic {basic}" in GitHTTPStub.seen  # it was sent
    assert token not in record.error and basic not in record.error
    assert token not in caplog.text and basic not in caplog.text
    config = gitsync.git_dir() / "repo" / ".git" / "config"
    assert not config.exists() or token not in config.read_text()
    assert token not in str(GitSource.objects.values_list("token_encrypted", flat=True).get())


def test_a_deploy_key_is_made_here_and_its_host_key_pinned_on_first_use(settings, tmp_path):
    from pipelines_app import deploy_keys

    source = GitSource.objects.create(url="git@example.com:org/repo.git", auth="ssh")
    public = deploy_keys.generate(source)
    source.save()
    assert public.startswith("ssh-ed25519 ") and public.endswith(" fast-flow")
    assert "PRIVATE" not in source.ssh_private_key_encrypted  # stored encrypted
    with deploy_keys.ssh_environment(source) as environment:
        command = environment["GIT_SSH_COMMAND"]
        assert "StrictHostKeyChecking=accept-new" in command and "IdentitiesOnly=yes" in command
        key_file = Path(command.split(" -i ")[1].split(" ")[0])
        assert "OPENSSH PRIVATE KEY" in key_file.read_text()
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        known_hosts = Path(command.split("UserKnownHostsFile=")[1].split(" ")[0])
        known_hosts.write_text("example.com ssh-ed25519 AAAAC3Nza...pinned\n")  # as ssh would
    assert not key_file.exists()  # the private key file lives only during the sync
    source.refresh_from_db()
    assert source.ssh_known_hosts == "example.com ssh-ed25519 AAAAC3Nza...pinned\n"
