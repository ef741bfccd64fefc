"""manage.py warm [NAME ...]: install pipelines' requirements into the shared uv cache now,
in this process's executor (a worker container), and print how it went."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines_app.models import Pipeline
from pipelines_app.warmup import warm


class Command(BaseCommand):
    help = "Warm the dependencies of the named pipelines (default: all with requirements)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*")

    def handle(self, *args, names: list[str], **options) -> None:
        pipelines = Pipeline.objects.filter(state=Pipeline.State.PRESENT, has_requirements=True)
        if names:
            pipelines = pipelines.filter(name__in=names)
            unknown = set(names) - set(pipelines.values_list("name", flat=True))
            if unknown:
                raise CommandError(
                    f"no pipeline with requirements named {', '.join(sorted(unknown))}"
                )
        failed = []
        for pipeline in pipelines:
            Pipeline.objects.filter(pk=pipeline.pk).update(warm_status=Pipeline.WarmStatus.WARMING)
            warm(pipeline.pk)
            pipeline.refresh_from_db()
            took = pipeline.warm_duration.total_seconds() if pipeline.warm_duration else 0
            if pipeline.warm_status == Pipeline.WarmStatus.READY:
                self.stdout.write(f"{pipeline.name}: ready ({took:.1f} s)")
            else:
                failed.append(pipeline.name)
                self.stdout.write(f"{pipeline.name}: failed\n{pipeline.warm_error}")
        if failed:
            raise CommandError(f"warm-up failed for {', '.join(failed)}")
