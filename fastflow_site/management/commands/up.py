"""manage.py up: the one-command start of a Fast-Flow instance on one machine.

It prepares the instance (database, static files, first admin, pipelines, the executor) and
then becomes the parent of the web server (daphne) and the worker (fastflow_site/serve.py)
until it is stopped (Ctrl-C or SIGTERM, passed on to both).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from docker.errors import DockerException

from fastflow_site.node_keys import KeysOfItsOwn, refuse_new_keys_beside_nodes
from fastflow_site.roles import Role, set_role
from fastflow_site.upgrades import NewerDatabase, refuse_a_newer_database
from pipelines_app.discovery import discover, pipelines_root
from pipelines_app.gitsync import sync
from pipelines_app.models import GitSource, Sync
from runs_app.executors import EngineUnavailable, ExecutorError, layout
from runs_app.executors.docker import DockerExecutor
from runs_app.executors.sandbox import SandboxExecutor

EXAMPLES_DIR = Path(settings.BASE_DIR) / "examples" / "pipelines"
PASSWORD_FILE_NAME = "initial-admin-password.txt"  # noqa: S105 (a file name)
NO_ENGINE = "No Docker engine is reachable (is dockerd running?)."
NO_ENGINE_HELP = (
    "Runs wait in the queue until it is. To run pipelines as local processes instead "
    "(far less isolation), set FASTFLOW_EXECUTOR=local."
)
LOCAL_NOTE = (
    "pipelines run as local processes (FASTFLOW_EXECUTOR=local): they are not isolated "
    "from this machine; see README."
)


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
        self.prepare_executor()
        self.stdout.write(self.style.SUCCESS(f"Fast-Flow is up on http://{host}:{port}/"))
        worker = [sys.executable, "manage.py", "worker"]
        self.serve([self.web_command(host, port), worker])

    def prepare(self, *, demo: bool) -> None:
        try:
            refuse_a_newer_database()
        except NewerDatabase as problem:
            raise CommandError(str(problem)) from None
        call_command("migrate", interactive=False, verbosity=0)
        try:
            refuse_new_keys_beside_nodes()
        except KeysOfItsOwn as problem:
            raise CommandError(str(problem)) from None
        call_command("collectstatic", interactive=False, verbosity=0)
        repository = GitSource.load()
        if demo and not repository.is_configured:
            self.install_demo_pipelines()
        self.ensure_admin()
        if repository.is_configured:
            self.sync_repository()
        scan, record = discover()
        if scan.error:
            self.stdout.write(self.style.WARNING(scan.error))
        else:
            self.stdout.write(
                f"{len(scan.pipelines)} pipeline(s) in {scan.root}"
                + (f", {record.invalid_count} with errors" if record.invalid_count else "")
            )

    def sync_repository(self) -> None:
        """Deploy the repository's newest commit before serving (a failure is said, and the
        last deployed tree, if any, is served)."""
        record = sync(Sync.Trigger.CLI)
        if record is None:
            self.stdout.write("a sync is already running")
        elif record.status == Sync.Status.FAILED:
            self.stdout.write(self.style.WARNING(f"sync failed: {record.error}"))
        else:
            self.stdout.write(f"synced {record.branch} at {record.commit[:12]}")

    def install_demo_pipelines(self) -> None:
        root = pipelines_root()
        if root.exists():
            return  # never overwrite a person's pipelines
        shutil.copytree(EXAMPLES_DIR, root)
        self.stdout.write(f"Copied the demo pipelines to {root}")

    def ensure_admin(self) -> None:
        """The first start creates `admin` with a random password, printed once (and kept,
        readable only by the service's user, in DATA_DIR until someone deletes it)."""
        password_file = Path(settings.DATA_DIR) / PASSWORD_FILE_NAME
        password_file.parent.mkdir(parents=True, exist_ok=True)
        user_model = get_user_model()
        if user_model.objects.exists():
            if password_file.exists():
                self.stdout.write(
                    f"The admin's first password was printed on the first start; it is in "
                    f"{password_file} until you delete that file."
                )
            return
        password = secrets.token_urlsafe(12)
        email = settings.INITIAL_ADMIN_EMAIL.strip().lower() or "admin@localhost"
        admin = user_model.objects.create_user("admin", email, password)
        set_role(admin, Role.ADMIN)
        if settings.INITIAL_ADMIN_EMAIL:
            # Set by whoever runs the instance: a provider sign-in with this verified
            # address is this admin's (and links the provider to the account).
            EmailAddress.objects.create(user=admin, email=email, verified=True, primary=True)
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n")
        self.stdout.write(
            self.style.SUCCESS(f"Log in as admin with the password {password}")
            + f"\n(shown this once; also in {password_file}: change it with "
            "`manage.py changepassword admin`, then delete that file)"
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

    def prepare_executor(self) -> None:
        """Make sure runs can start: a Docker engine and the worker image, or say why not.

        There is no silent fallback: the local executor runs only when FASTFLOW_EXECUTOR=local
        asks for it. Without an engine, a production instance (DEBUG off) does not start;
        a development one starts and its runs wait until the engine is there.
        """
        if settings.FASTFLOW_EXECUTOR == "local":
            self.stdout.write(self.style.WARNING(LOCAL_NOTE))
            return
        executor = DockerExecutor()
        try:
            executor.check()
        except EngineUnavailable as problem:
            if not settings.DEBUG:
                raise CommandError(f"{NO_ENGINE} {problem}. {NO_ENGINE_HELP}") from None
            self.stdout.write(self.style.WARNING(f"{NO_ENGINE} {NO_ENGINE_HELP}"))
            return
        try:
            executor.check_image()
        except ExecutorError:
            self.build_worker_image()
        if settings.FASTFLOW_EXECUTOR == "docker":
            self.say_what_runs_reach(executor)
        if settings.FASTFLOW_EXECUTOR == "sandbox" and (problem := SandboxExecutor.unavailable()):
            # Its runs would wait for what is missing: a production instance says so first.
            message = f"The sandbox executor cannot start runs here: {problem}."
            if not settings.DEBUG:
                raise CommandError(message)
            self.stdout.write(self.style.WARNING(message))

    def say_what_runs_reach(self, executor: DockerExecutor) -> None:
        """Runs reach only RUN_HOST_PORTS of this machine, or the operator hears why not."""
        try:
            layout.ensure_run_network(executor.api)
        except (ExecutorError, DockerException):
            return  # the first run says why
        problem = layout.unguarded_networks.get(settings.RUN_NETWORK)
        if problem:
            self.stdout.write(
                self.style.WARNING(
                    "Runs can reach services listening on this machine's other addresses: "
                    f'{problem}. docs/execution.md ("What runs reach of the host") gives '
                    "the firewall rule that closes them."
                )
            )

    def build_worker_image(self) -> None:
        image = settings.WORKER_IMAGE
        folder = Path(settings.BASE_DIR) / "runs_app" / "worker_image"
        self.stdout.write(f"The worker image {image} is missing or outdated; building it...")
        attempts = [["docker", "build", "-t", image, str(folder)]]
        if os.geteuid() == 0:  # no registry needed, but debootstrap needs root
            attempts.insert(0, ["bash", str(folder / "build-offline.sh"), image])
        for command in attempts:
            if subprocess.run(command, check=False).returncode == 0:  # noqa: S603
                return
        self.stdout.write(
            self.style.ERROR(
                f"Could not build {image}; runs fail until it exists. Build it with "
                f"`bash {folder / 'build-offline.sh'}` (as root) or `docker build -t {image} "
                f"{folder}`."
            )
        )

    def serve(self, commands: list[list[str]]) -> None:
        """Become the children's parent (fastflow_site/serve.py): nothing of Django stays
        loaded in the process that only waits for them."""
        self.stdout.flush()
        folder = str(settings.BASE_DIR)
        server = [sys.executable, "-m", "fastflow_site.serve", folder, json.dumps(commands)]
        os.chdir(folder)
        os.execv(sys.executable, server)  # noqa: S606 (replacing this process is the point)
