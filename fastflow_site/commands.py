"""For management commands that act for a person (`--as NAME`): who they are, and whether
their role allows it. Without --as, a command acts as the machine's operator, who has the
shell and so the whole instance; the audit log then names no person, and via "command"."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser


def add_actor_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--as",
        dest="actor",
        default="",
        metavar="PERSON",
        help="act for this person (username or e-mail): their role applies and the audit "
        "log names them",
    )


def actor_for(name: str, permission: str):
    """The active person called `name` (None for no name), if their role allows it."""
    if not name:
        return None
    users = get_user_model().objects
    person = users.filter(username=name).first() or users.filter(email__iexact=name).first()
    if person is None or not person.is_active:
        raise CommandError(f"No active person {name!r} here.")
    if not person.has_perm(permission):
        raise CommandError(f"{person.get_username()}'s role does not allow this.")
    return person
