"""manage.py invite EMAIL --role R: an invitation link (single use, expiring), printed, and
sent by mail when mail is configured."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fastflow_site import people
from fastflow_site.audit import acting_as
from fastflow_site.commands import actor_for, add_actor_argument
from fastflow_site.roles import Role


class Command(BaseCommand):
    help = "Invite someone: prints the link (and mails it when EMAIL_URL is set)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--role", choices=Role.values, default=Role.VIEWER)
        parser.add_argument("--days", type=int, default=None, help="valid for (INVITATION_DAYS)")
        add_actor_argument(parser)

    def handle(self, *args, email: str, role: str, days: int | None, actor: str, **options):
        by = actor_for(actor, "auth.change_user")
        with acting_as(by):
            try:
                invitation, link, mailed = people.invite(email, role, by=by, days=days)
            except people.PeopleError as problem:
                raise CommandError(str(problem)) from None
        self.stdout.write(f"Invitation for {invitation.email} as {invitation.role}")
        self.stdout.write(f"  expires {invitation.expires_at:%Y-%m-%d %H:%M %Z}; works once")
        self.stdout.write(f"  {'mailed; ' if mailed else ''}link: {link}")
