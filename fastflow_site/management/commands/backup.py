"""manage.py backup [PATH]: the database, the run logs and a settings summary in one archive."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from fastflow_site.backup import BackupError, backup


class Command(BaseCommand):
    help = "Write one archive (database, logs, settings summary) to restore this instance from."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "path",
            nargs="?",
            help="the archive to write (default: BACKUP_DIR or DATA_DIR/backups, a dated name)",
        )

    def handle(self, *args, path: str | None, **options) -> None:
        target = Path(path) if path else self.default_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            summary = backup(target)
        except BackupError as problem:
            raise CommandError(str(problem)) from None
        counts = ", ".join(
            f"{count} {name.split('.')[-1]}" for name, count in summary["counts"].items()
        )
        self.stdout.write(f"backup written to {target} ({target.stat().st_size:,} bytes): {counts}")
        self.stdout.write(
            "It holds encrypted values as they are: keep ENCRYPTION_KEY (fingerprint "
            f"{summary['encryption_key_fingerprint']}) safe, apart from the archive."
        )

    @staticmethod
    def default_path() -> Path:
        folder = (
            Path(settings.BACKUP_DIR)
            if settings.BACKUP_DIR
            else Path(settings.DATA_DIR) / "backups"
        )
        return folder / f"backup-{timezone.now():%Y%m%d-%H%M%S}.tar.gz"
