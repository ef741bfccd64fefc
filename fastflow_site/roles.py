"""Roles: viewer, operator, admin — each a group (made by a migration) with permissions.

Every person has exactly one role. Permissions, not role names, are what views, the admin,
websockets and the API check, so a role is a bundle of Django permissions:

- viewer: reads everything except secret values (never shown to anyone) and webhook keys;
- operator: also runs, cancels and re-runs; manages schedules made in the UI, webhook keys
  and parameters (not secrets); works in the admin;
- admin: everything (a superuser): secrets, the repository, people, roles, settings.
"""

from __future__ import annotations

from django.apps import apps as global_apps
from django.contrib.auth.models import Group, Permission
from django.db import models, transaction

# Apps whose records every role may read.
READABLE_APPS = ("pipelines_app", "runs_app", "secrets_app")
# Read permissions a viewer does not get.
HIDDEN_FROM_VIEWERS = {"pipelines_app.view_webhookkey"}
OPERATOR_EXTRA = {
    "pipelines_app.view_webhookkey",
    "runs_app.add_pipelinerun",  # run, re-run
    "runs_app.change_pipelinerun",  # cancel
    "runs_app.change_daemon",  # pause / resume
    "runs_app.change_workernode",  # drain / resume
    "pipelines_app.add_schedule",
    "pipelines_app.change_schedule",
    "pipelines_app.delete_schedule",
    "pipelines_app.add_webhookkey",
    "pipelines_app.change_webhookkey",
    "pipelines_app.delete_webhookkey",
    # Parameters; secrets also need secrets_app.manage_secrets (admins only).
    "secrets_app.add_variable",
    "secrets_app.change_variable",
    "secrets_app.delete_variable",
    # The admin's task queue, read-only.
    "django_q.view_success",
    "django_q.view_failure",
    "django_q.view_schedule",
    "django_q.view_ormq",
}


class Role(models.TextChoices):
    VIEWER = "viewer", "viewer"
    OPERATOR = "operator", "operator"
    ADMIN = "admin", "admin"


ROLE_NAMES = [role.value for role in Role]


def _codenames(permissions) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions}


def default_permissions(role: str) -> set[str]:
    """The permissions a role's group holds (as "app_label.codename")."""
    every = Permission.objects.select_related("content_type")
    if role == Role.ADMIN:
        return _codenames(every)
    readable = every.filter(content_type__app_label__in=READABLE_APPS, codename__startswith="view_")
    viewer = _codenames(readable) - HIDDEN_FROM_VIEWERS
    return viewer if role == Role.VIEWER else viewer | OPERATOR_EXTRA


def _permission_objects(names: set[str]) -> list[Permission]:
    wanted = {tuple(name.split(".", 1)) for name in names}
    return [
        p
        for p in Permission.objects.select_related("content_type")
        if (p.content_type.app_label, p.codename) in wanted
    ]


def ensure_role_groups(sender=None, **kwargs) -> None:
    """After every migrate: the role groups exist and hold at least their permissions.

    The groups are made by a migration; their permissions are topped up here because Django
    makes permissions after the migrations ran, and new models bring new ones. An admin's
    own additions to a group are kept; nothing is taken away.
    """
    if not global_apps.is_installed("django.contrib.auth"):
        return
    for role in Role:
        group, _ = Group.objects.get_or_create(name=role.value)
        group.permissions.add(*_permission_objects(default_permissions(role)))


def role_of(user) -> str | None:
    """The person's role (a superuser is an admin); None for someone given none."""
    if not getattr(user, "is_authenticated", False):
        return None
    if user.is_superuser:
        return Role.ADMIN
    names = {group.name for group in user.groups.all()} & set(ROLE_NAMES)
    for role in reversed(ROLE_NAMES):  # the highest, should an admin have added two
        if role in names:
            return role
    return None


@transaction.atomic
def set_role(user, role: str) -> None:
    """Give the person exactly this role (the only way roles change: UI, admin, commands)."""
    if role not in ROLE_NAMES:
        raise ValueError(f"{role!r} is not a role; use one of {', '.join(ROLE_NAMES)}")
    user.is_superuser = role == Role.ADMIN
    user.is_staff = role in (Role.OPERATOR, Role.ADMIN)  # the admin is the operator's console
    user.save(update_fields=["is_superuser", "is_staff"])
    others = Group.objects.filter(name__in=ROLE_NAMES).exclude(name=role)
    user.groups.remove(*others)
    user.groups.add(Group.objects.get_or_create(name=role)[0])
