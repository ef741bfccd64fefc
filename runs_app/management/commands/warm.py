"""manage.py warm [NAME ...]: install pipelines' requirements into the shared uv cache now,
in this process's executor (a worker container), and print how it went."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines_app.models import Pipeline
from runs_app.worker.warming import warm_all_now


class Command(BaseCommand):
    help = "Warm the dependencies of the named pipelines (default: all that have any)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*")

    def handle(self, *args, names: list[str], **options) -> None:
        present = Pipeline.objects.filter(state=Pipeline.State.PRESENT, config_errors=[])
        pipelines = [p for p in present if p.needs_environment and (not names or p.name in names)]
        unknown = set(names) - {p.name for p in pipelines}
        if unknown:
            raise CommandError(
                f"no valid pipeline with requirements named {', '.join(sorted(unknown))}"
            )
        failed = []

        def report(pipeline: Pipeline) -> None:
            took = pipeline.warm_duration.total_seconds() if pipeline.warm_duration else 0
            if pipeline.warm_status == Pipeline.WarmStatus.READY:
                self.stdout.write(f"{pipeline.name}: ready ({took:.1f} s)")
            else:
                failed.append(pipeline.name)
                self.stdout.write(f"{pipeline.name}: failed\n{pipeline.warm_error}")

        warm_all_now(pipelines, report)
        if failed:
            raise CommandError(f"warm-up failed for {', '.join(failed)}")
