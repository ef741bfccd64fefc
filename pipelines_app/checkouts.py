"""Where the deployed pipeline repository lives (layout in pipelines_app.gitsync).

Plain path helpers, used by discovery (which reads the live checkout) and by the sync
(which writes it), and by runs (which record the commit they ran).
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from pipelines_app.models import GitSource


def git_dir() -> Path:
    return Path(settings.DATA_DIR) / "git"


def current_link() -> Path:
    return git_dir() / "current"


def checkouts_dir() -> Path:
    return git_dir() / "checkouts"


def live_pipelines_root(source: GitSource) -> Path:
    root = current_link()
    return root / source.subdir.strip("/") if source.subdir.strip("/") else root


def live_commit() -> str:
    link = current_link()
    return commit_of(link) if link.exists() else ""


def commit_of(folder: Path) -> str:
    """The commit of the checkout a (resolved) pipeline folder lies in; "" outside git."""
    try:
        relative = folder.resolve().relative_to(checkouts_dir().resolve())
    except ValueError:
        return ""
    return relative.parts[0] if relative.parts else ""
