"""manage.py discover: scan the pipelines directory, update the catalogue, print what was found."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines_app.discovery import FolderReport, Scan, discover, pipelines_root, scan_pipelines

COLUMNS = ("NAME", "STATUS", "ENTRY POINT", "REQUIREMENTS", "PROBLEMS")


class Command(BaseCommand):
    help = (
        "Discover pipelines in PIPELINES_DIR (+ PIPELINES_SUBDIR) and list them with their errors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--strict",
            action="store_true",
            help="exit with status 1 when any pipeline is invalid or any folder is rejected",
        )
        parser.add_argument(
            "--path", type=Path, help="scan this directory instead of PIPELINES_DIR"
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="only check and print; leave the catalogue in the database untouched",
        )

    def handle(self, *args, strict: bool, path: Path | None, dry_run: bool, **options) -> None:
        root = path or pipelines_root()
        scan = scan_pipelines(root) if dry_run else discover(root)[0]
        if scan.error:
            raise CommandError(scan.error)
        self.stdout.write(self.render_table(scan))
        broken = [f for f in scan.folders if f.status in ("invalid", "rejected")]
        summary = (
            f"{len(scan.pipelines)} pipeline(s) in {root}: "
            f"{sum(f.status == 'ok' for f in scan.folders)} ok, "
            f"{sum(f.status == 'invalid' for f in scan.folders)} invalid, "
            f"{sum(f.status == 'rejected' for f in scan.folders)} folder(s) rejected, "
            f"{sum(f.status == 'ignored' for f in scan.folders)} ignored"
            + (" (dry run: database not changed)" if dry_run else "")
        )
        self.stdout.write(self.style.WARNING(summary) if broken else self.style.SUCCESS(summary))
        if strict and broken:
            raise CommandError(
                f"{len(broken)} folder(s) need fixing: {', '.join(f.name for f in broken)}"
            )

    def render_table(self, scan: Scan) -> str:
        rows = [_row(folder) for folder in scan.folders]
        widths = [2 + max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(4)]
        header = "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=False))
        lines = [header + COLUMNS[4]]
        for folder, row in zip(scan.folders, rows, strict=True):
            line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + row[4]
            style = {"ok": None, "ignored": None}.get(folder.status, self.style.ERROR)
            lines.append(style(line) if style else line)
            for problem in folder.errors:
                lines.append(self.style.ERROR(f"    ✖ {problem.message}"))
            for problem in folder.warnings:
                lines.append(self.style.WARNING(f"    ⚠ {problem.message}"))
            if folder.reason:
                lines.append(f"    · {folder.name} {folder.reason}")
        return "\n".join(lines)


def _row(folder: FolderReport) -> tuple[str, str, str, str, str]:
    if not folder.is_pipeline:
        return (folder.name, folder.status, "-", "-", "")
    problems = []
    if folder.errors:
        problems.append(f"{len(folder.errors)} error(s)")
    if folder.warnings:
        problems.append(f"{len(folder.warnings)} warning(s)")
    return (
        folder.name,
        folder.status,
        folder.config.entry_point,
        folder.requirements_file or "-",
        ", ".join(problems),
    )
