"""manage.py sync: sync the pipeline repository now and print what it deployed."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fastflow_site import audit
from fastflow_site.commands import actor_for, add_actor_argument
from pipelines_app.gitsync import sync
from pipelines_app.models import GitSource, Sync


class Command(BaseCommand):
    help = "Fetch the pipeline repository, deploy its newest commit atomically, rediscover."

    def add_arguments(self, parser: CommandParser) -> None:
        add_actor_argument(parser)

    def handle(self, *args, actor: str, **options) -> None:
        person = actor_for(actor, "pipelines_app.add_sync")
        audit.record(audit.Action.SYNC_REQUESTED, GitSource.load(), actor=person, via="command")
        record = sync(Sync.Trigger.CLI, person)
        if record is None:
            self.stdout.write("another sync is running; it will sync once more when it ends")
            return
        if record.status == Sync.Status.FAILED:
            raise CommandError(f"sync failed: {record.error}")
        self.stdout.write(
            f"synced {record.branch} at {record.commit[:12]} — {record.message.splitlines()[0]}"
            f" ({record.author}) in {record.duration.total_seconds():.1f} s: {record.summary}"
        )
