"""manage.py restore ARCHIVE: bring an empty instance back from a `manage.py backup`."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fastflow_site.backup import BackupError, restore


class Command(BaseCommand):
    help = "Restore an empty instance (fresh DATA_DIR or empty database) from a backup archive."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("archive")

    def handle(self, *args, archive: str, **options) -> None:
        path = Path(archive)
        if not path.is_file():
            raise CommandError(f"{path} does not exist")
        try:
            found, warnings = restore(path)
        except BackupError as problem:
            raise CommandError(str(problem)) from None
        counts = ", ".join(
            f"{count} {name.split('.')[-1]}" for name, count in found["counts"].items()
        )
        self.stdout.write(f"restored the backup of {found['created_at']}: {counts}")
        for warning in warnings:
            self.stderr.write(self.style.WARNING(warning))
