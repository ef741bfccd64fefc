from __future__ import annotations

from django.apps import AppConfig


class FastflowSiteConfig(AppConfig):
    """What belongs to the whole site: people, roles, invitations, audit log, API tokens."""

    name = "fastflow_site"
    verbose_name = "People and audit"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from fastflow_site import checks, receivers, roles  # noqa: F401 (checks register)

        receivers.connect()
        post_migrate.connect(roles.ensure_role_groups, sender=self)
