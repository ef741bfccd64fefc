"""manage.py up: the one-command start of a Fast-Flow instance on one machine.

It prepares the instance (database, static files, first admin, pipelines) and then runs the
web server as a child process until it is stopped (Ctrl-C or SIGTERM, passed on to children).
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines_app.discovery import discover, pipelines_root

EXAMPLES_DIR = Path(settings.BASE_DIR) / "examples" / "pipelines"
PASSWORD_FILE_NAME = "initial-admin-password.txt"  # noqa: S105 (a file name)


class Command(BaseCommand):
    help = "Prepare this instance (migrate, first admin, discovery) and serve it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--demo",
            action="store_true",
            help="copy the demo pipelines into PIPELINES_DIR when it does not exist yet",
        )
        parser.add_argument(
            "--prepare-only", action="store_true", help="prepare, print the login, do not serve"
        )

    def handle(self, *args, host: str, port: int, demo: bool, prepare_only: bool, **options):
        self.prepare(demo=demo)
        if prepare_only:
            return
        self.stdout.write(self.style.SUCCESS(f"Fast-Flow is up on http://{host}:{port}/"))
        self.serve([self.web_command(host, port)])

    def prepare(self, *, demo: bool) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        if demo:
            self.install_demo_pipelines()
        self.ensure_admin()
        scan, record = discover()
        if scan.error:
            self.stdout.write(self.style.WARNING(scan.error))
        else:
            self.stdout.write(
                f"{len(scan.pipelines)} pipeline(s) in {scan.root}"
                + (f", {record.invalid_count} with errors" if record.invalid_count else "")
            )

    def install_demo_pipelines(self) -> None:
        root = pipelines_root()
        if root.exists():
            return  # never overwrite a person's pipelines
        shutil.copytree(EXAMPLES_DIR, root)
        self.stdout.write(f"Copied the demo pipelines to {root}")

    def ensure_admin(self) -> None:
        """The first start creates `admin` with a random password, kept in DATA_DIR (0600)."""
        password_file = Path(settings.DATA_DIR) / PASSWORD_FILE_NAME
        user_model = get_user_model()
        if not user_model.objects.exists():
            password = secrets.token_urlsafe(12)
            user_model.objects.create_superuser(
                "admin", settings.INITIAL_ADMIN_EMAIL or "admin@localhost", password
            )
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        if password_file.exists():
            self.stdout.write(
                self.style.SUCCESS("Log in as admin with the password in ")
                + f"{password_file}: {password_file.read_text().strip()}\n"
                "(change it with `manage.py changepassword admin`, then delete that file)"
            )

    def web_command(self, host: str, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "daphne",
            "--bind",
            host,
            "--port",
            str(port),
            "fastflow_site.asgi:application",
        ]

    def serve(self, commands: list[list[str]]) -> None:
        """Run the children until one ends or we are told to stop; then stop them all."""
        children = [subprocess.Popen(command, cwd=settings.BASE_DIR) for command in commands]  # noqa: S603

        def stop(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        try:
            while all(child.poll() is None for child in children):
                try:
                    children[0].wait(timeout=1)
                except subprocess.TimeoutExpired:
                    continue
            exit_code = next(c.returncode for c in children if c.returncode is not None)
        except KeyboardInterrupt:
            pass
        finally:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
        if exit_code:
            raise CommandError(f"a Fast-Flow process ended with exit code {exit_code}")
