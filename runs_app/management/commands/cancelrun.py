"""manage.py cancelrun RUN_ID"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from fastflow_site.commands import actor_for, add_actor_argument
from runs_app.models import PipelineRun


class Command(BaseCommand):
    help = "Cancel a queued or running run (its UUID, or a unique prefix of it)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id")
        add_actor_argument(parser)

    def handle(self, *args, run_id: str, actor: str, **options) -> None:
        person = actor_for(actor, "runs_app.change_pipelinerun")
        try:
            matches = list(PipelineRun.objects.filter(public_id__startswith=run_id.lower())[:2])
        except ValidationError:
            matches = []
        if len(matches) != 1:
            raise CommandError(
                f"no run {run_id!r}" if not matches else f"{run_id!r} matches several runs"
            )
        run = matches[0]
        result = run.cancel(by=person, via="command")
        message = {
            "cancelled": f"run {run.public_id} cancelled (it was queued)",
            "stopping": f"run {run.public_id} is being stopped",
            "finished": f"run {run.public_id} had already ended ({run.status})",
        }[result]
        self.stdout.write(message)
