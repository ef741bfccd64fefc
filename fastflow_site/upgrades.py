"""Upgrading is "pull, migrate, restart": `up` migrates at start, in order. Going back is
not: a database that a newer Fast-Flow migrated is refused by an older one, with what to
do, instead of running on a schema it does not know."""

from __future__ import annotations

from django.db import connection
from django.db.migrations.loader import MigrationLoader

OWN_APPS = ("secrets_app", "pipelines_app", "runs_app", "fastflow_site")


class NewerDatabase(RuntimeError):
    """The database holds migrations this code does not have."""


def unknown_migrations() -> list[str]:
    """Migrations of Fast-Flow's apps applied to the database but unknown to this code."""
    loader = MigrationLoader(connection, ignore_no_migrations=True)
    known = set(loader.disk_migrations)
    return sorted(
        f"{app}.{name}"
        for app, name in loader.applied_migrations
        if app in OWN_APPS and (app, name) not in known
    )


def refuse_a_newer_database() -> None:
    if unknown := unknown_migrations():
        raise NewerDatabase(
            "This database was migrated by a newer Fast-Flow than this one (it has "
            f"{', '.join(unknown)}, which this version does not know). Run the newer "
            "version again, or restore a backup made with this version (manage.py restore)."
        )
