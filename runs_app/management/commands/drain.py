"""Drain a worker node (it takes no new runs; the runs it follows finish), or let it take
runs again: the command form of the Workers page's buttons."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fastflow_site.audit import Action, record
from runs_app.models import PipelineRun, WorkerNode


class Command(BaseCommand):
    help = "Drain a worker node (no new runs; current ones finish), or --resume it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("node", help="the node's name (WORKER_NAME; see the Workers page)")
        parser.add_argument("--resume", action="store_true", help="let it take runs again")

    def handle(self, *args, node: str, resume: bool, **options) -> None:
        found = WorkerNode.objects.filter(name=node).first()
        if found is None:
            known = ", ".join(WorkerNode.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"no worker node is called {node!r} (known: {known})")
        if resume:
            found.resume()
            record(Action.NODE_RESUMED, found, via="command")
            self.stdout.write(f"{node} takes runs again.")
            return
        found.drain(by="manage.py drain")
        record(Action.NODE_DRAINED, found, via="command")
        in_flight = PipelineRun.followed_on(found).count()
        self.stdout.write(
            f"{node} is drained: it takes no new runs; {in_flight} run(s) it follows finish."
        )
