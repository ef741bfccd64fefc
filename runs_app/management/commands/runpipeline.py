"""manage.py runpipeline NAME [-e KEY=VALUE]... [--follow]"""

from __future__ import annotations

import re
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fastflow_site.commands import actor_for, add_actor_argument
from pipelines_app.models import Pipeline
from runs_app.follow import NoWorkerNotice, exit_status, follow_log
from runs_app.models import PipelineRun, RunRefused

ENV_ASSIGNMENT = re.compile(r"^([^=]+)=(.*)$", re.DOTALL)


class Command(BaseCommand):
    help = "Queue a run of a pipeline; with --follow, stream its log and exit with its status."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the pipeline (its folder name)")
        parser.add_argument(
            "-e",
            "--env",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a value for this run's environment (repeatable)",
        )
        parser.add_argument(
            "--follow", action="store_true", help="print the log live and exit with the run"
        )
        parser.add_argument(
            "--confirm-disabled",
            action="store_true",
            help="run it although its pipeline.json disables it",
        )
        add_actor_argument(parser)

    def handle(
        self,
        *args,
        name: str,
        env: list[str],
        follow: bool,
        confirm_disabled: bool,
        actor: str,
        **options,
    ):
        person = actor_for(actor, "runs_app.add_pipelinerun")
        try:
            pipeline = Pipeline.objects.get(name=name)
        except Pipeline.DoesNotExist:
            raise CommandError(
                f"no pipeline called {name!r}; `manage.py discover` lists them"
            ) from None
        parameters = {}
        for assignment in env:
            match = ENV_ASSIGNMENT.match(assignment)
            if not match:
                raise CommandError(f"-e {assignment!r} is not KEY=VALUE")
            parameters[match[1]] = match[2]
        try:
            run = PipelineRun.start(
                pipeline,
                by=person,
                via="command",
                trigger=PipelineRun.Trigger.CLI,
                parameters=parameters,
                confirm_disabled=confirm_disabled,
            )
        except RunRefused as exc:
            hint = " (--confirm-disabled)" if exc.kind == "disabled" else ""
            raise CommandError(exc.describe() + hint) from None
        self.stdout.write(f"queued run {run.public_id} of {pipeline.name}")
        if not follow:
            return
        notice = NoWorkerNotice(lambda text: self.stderr.write(self.style.WARNING(text)))
        for _, _, stream, text in follow_log(run, on_poll=notice):
            target = self.stderr if stream == "E" else self.stdout
            target.write(text if stream != "S" else f"[fast-flow] {text}")
        run.refresh_from_db()
        sys.exit(exit_status(run))
