"""Git is law: sync the pipeline repository and deploy it atomically.

Layout under DATA_DIR/git/:

    repo/                 the working clone: fetched, then hard-reset to the remote branch
    checkouts/<sha>/      one read-only tree per deployed commit (a git worktree)
    current -> checkouts/<sha>     the live tree; discovery reads current/<subdir>
    sync.lock             held by the one sync that runs
    sync.pending          a sync was asked for while one ran: run again after it

A sync checks the new commit out beside the live one and switches `current` with one
rename, so nothing ever sees a half-updated folder. A run resolves `current` when it starts
(pipeline folders are stored through it) and keeps its checkout for its whole life; the
commit it ran is recorded on it. Checkouts other than the live one and the one before it
are removed once no running run uses them.

Credentials never touch `.git/config`: a token travels per command in git's environment
(GIT_CONFIG_*), an SSH key through a temporary file named in GIT_SSH_COMMAND, and every
message that reaches a person has them removed.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError
from django.utils import timezone
from django_q.tasks import async_task
from git import GitCommandError, Repo

from pipelines_app.checkouts import (
    checkouts_dir,
    commit_of,
    current_link,
    git_dir,
    live_commit,
    live_pipelines_root,
)
from pipelines_app.deploy_keys import ssh_environment
from pipelines_app.discovery import discover
from pipelines_app.github_app import installation_token
from pipelines_app.models import GitSource, Sync
from pipelines_app.signals import commits_in_use, sync_finished

__all__ = [
    "SyncError",
    "checkouts_dir",
    "commit_of",
    "current_link",
    "git_dir",
    "live_commit",
    "live_pipelines_root",
    "request_sync",
    "run_sync",
    "safe_url",
    "sync",
]

logger = logging.getLogger(__name__)


class SyncError(Exception):
    """A sync that cannot go on, in words for the person reading the sync history."""


# --- one sync at a time -------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive() -> Iterator[bool]:
    """True while this process holds the sync lock; False when another sync runs."""
    git_dir().mkdir(parents=True, exist_ok=True)
    with open(git_dir() / "sync.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sync(trigger: str, user=None) -> Sync | None:
    """Sync now; None when another sync is running (it will run once more after itself)."""
    pending = git_dir() / "sync.pending"
    with _exclusive() as mine:
        if not mine:
            pending.write_text(trigger)  # the running sync runs once more for it
            return None
        while True:
            pending.unlink(missing_ok=True)
            record = _sync_once(trigger, user)
            try:
                trigger, user = pending.read_text().strip() or trigger, None
            except FileNotFoundError:
                return record


def run_sync(trigger: str = Sync.Trigger.MANUAL, user_id: int | None = None) -> None:
    """The worker's task for a sync asked for on a page, by a push or by the interval."""
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    sync(trigger, user)


class SyncNotRequested(Exception):
    """The worker's task queue (the database, or Redis) could not take the request."""


def request_sync(trigger: str, user=None) -> None:
    """Hand a sync to the worker (the web process never runs git)."""
    try:
        async_task(
            "pipelines_app.gitsync.run_sync", trigger, user.pk if user else None, group="sync"
        )
    except (redis.RedisError, DatabaseError) as problem:
        raise SyncNotRequested(
            f"The sync could not be handed to the worker: its task queue cannot be reached "
            f"now ({type(problem).__name__}). Try again in a moment."
        ) from problem


_last_interval_request = 0.0


def request_sync_when_due() -> None:
    """The worker's tick: with AUTO_SYNC_INTERVAL, ask for a sync when the last one is that
    old (each worker process asks at most once per interval)."""
    global _last_interval_request
    interval = settings.AUTO_SYNC_INTERVAL
    if not interval or time.monotonic() - _last_interval_request < interval:
        return  # also: asked already, the task has not started yet
    if not GitSource.load().is_configured:
        return
    latest = Sync.objects.order_by("-started_at").values_list("started_at", flat=True).first()
    if latest is None or (timezone.now() - latest).total_seconds() >= interval:
        _last_interval_request = time.monotonic()
        request_sync(Sync.Trigger.INTERVAL)


def _sync_once(trigger: str, user) -> Sync:
    source = GitSource.load()
    record = Sync.objects.create(
        trigger=trigger,
        requested_by=user if user is not None and user.is_authenticated else None,
        url=safe_url(source.url),
        branch=source.branch,
        previous_commit=live_commit(),
    )
    secrets = []
    try:
        if not source.is_configured:
            raise SyncError("No repository is configured (GIT_REPO_URL, or the admin).")
        with _credentials(source) as (environment, secrets):
            repo = _fetch(source, environment)
        head = repo.head.commit
        _deploy(repo, head.hexsha)
        _scan, scan_record = discover()
        record.commit = head.hexsha
        record.author = f"{head.author.name} <{head.author.email}>"[:200]
        record.message = head.message.strip()
        record.summary = (
            f"{scan_record.created_count} new, {scan_record.updated_count} changed, "
            f"{scan_record.missing_count} gone, {scan_record.invalid_count} invalid"
        )
        record.status = Sync.Status.SUCCEEDED
        _remove_old_checkouts(keep={head.hexsha, record.previous_commit})
    except (SyncError, GitCommandError, OSError, ValueError) as problem:
        record.status = Sync.Status.FAILED
        record.error = _scrub(_describe(problem), secrets)
        logger.warning("sync failed: %s", record.error)
    except Exception as problem:  # a sync must never stay "running" in the history
        record.status = Sync.Status.FAILED
        record.error = _scrub(f"internal error: {type(problem).__name__}: {problem}", secrets)
        logger.exception("sync failed inside Fast-Flow")
    record.finished_at = timezone.now()
    record.save()
    sync_finished.send(sender=Sync, sync=record)
    return record


# --- git ----------------------------------------------------------------------------------


def _fetch(source: GitSource, environment: dict[str, str]) -> Repo:
    """Clone on the first sync; afterwards fetch and hard-reset: the remote always wins."""
    clone = git_dir() / "repo"
    branch = source.branch
    if clone.is_dir() and (clone / ".git").exists():
        repo = Repo(clone)
        with repo.git.custom_environment(**environment):
            repo.git.remote("set-url", "origin", source.url)
            repo.git.fetch(
                "--prune", "--force", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
            )
    else:
        shutil.rmtree(clone, ignore_errors=True)
        repo = Repo.clone_from(source.url, clone, branch=branch, no_checkout=False, env=environment)
    with repo.git.custom_environment(**environment):
        repo.git.checkout("--force", "-B", branch, f"refs/remotes/origin/{branch}")
        repo.git.reset("--hard", f"refs/remotes/origin/{branch}")
        repo.git.clean("-ffdx")
    return repo


def _deploy(repo: Repo, sha: str) -> None:
    """The commit's tree beside the live one, then `current` switched in one rename."""
    target = checkouts_dir() / sha
    if not target.is_dir():
        checkouts_dir().mkdir(parents=True, exist_ok=True)
        repo.git.worktree("prune")
        repo.git.worktree("add", "--detach", "--force", str(target), sha)
    link = current_link()
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    staging = git_dir() / f"current.{os.getpid()}"
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    os.replace(staging, link)  # atomic: readers see the old tree or the new one


def _remove_old_checkouts(keep: set[str]) -> None:
    """Checkouts no running run uses, except the live one and the one before it."""
    if not checkouts_dir().is_dir():
        return
    in_use = commits_in_use()
    repo = Repo(git_dir() / "repo")
    for checkout in checkouts_dir().iterdir():
        if checkout.name in keep or checkout.name in in_use:
            continue
        try:
            repo.git.worktree("remove", "--force", str(checkout))
        except GitCommandError:
            shutil.rmtree(checkout, ignore_errors=True)
    repo.git.worktree("prune")


# --- credentials --------------------------------------------------------------------------


@contextlib.contextmanager
def _credentials(source: GitSource) -> Iterator[tuple[dict[str, str], list[str]]]:
    """git's environment for this source, and the secret strings to scrub from messages."""
    environment = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    secrets: list[str] = _url_credentials(source.url)
    if source.auth in (GitSource.Auth.TOKEN, GitSource.Auth.GITHUB_APP):
        if source.auth == GitSource.Auth.TOKEN:
            token = source.secret("token")
        else:
            token = installation_token()
        if not token:
            raise SyncError("The repository needs a token, and none is stored.")
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        environment.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
        )
        secrets += [token, basic]
        yield environment, secrets
    elif source.auth == GitSource.Auth.SSH:
        with ssh_environment(source) as ssh:
            environment.update(ssh)
            yield environment, secrets
    else:
        yield environment, secrets


def _url_credentials(url: str) -> list[str]:
    """A user:password or token written into the URL itself, to scrub from messages."""
    if "@" not in url or "://" not in url:
        return []
    credentials = url.split("://", 1)[1].split("@", 1)[0]
    return [part for part in (credentials, *credentials.split(":", 1)) if len(part) >= 4]


def safe_url(url: str) -> str:
    """The URL without a password or token someone put into it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.split("@", 1)
        if ":" in credentials or len(credentials) > 20:
            return f"{scheme}://***@{host}"
    return url


def _describe(problem: Exception) -> str:
    if isinstance(problem, GitCommandError):
        detail = (problem.stderr or problem.stdout or "").strip()
        detail = detail.removeprefix("stderr: ").strip("'").strip()
        return f"git {problem.command[1] if len(problem.command) > 1 else ''} failed: {detail}"
    return str(problem)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
