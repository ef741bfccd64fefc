"""Shared fixtures: people by role, and throw-away pipeline directories."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from allauth.account.models import EmailAddress
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import connection, connections
from django.test import override_settings

from bench.common import CHROMIUM_ARGS
from fastflow_site.roles import Role, set_role
from tests.runs_app.conftest import HOST_PORTS, require

EXAMPLES_DIR = Path(settings.BASE_DIR) / "examples" / "pipelines"


def pytest_collection_modifyitems(config, items) -> None:
    """Each test is marked by the real parts it needs, from the fixtures it uses, so tiers
    can be chosen (README: the quick tier leaves out docker, browser, compose and slow)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        executor = params.get("executor", "docker")
        # Sandboxed runs need the engine too: their root is the worker image, unpacked.
        in_containers = "runs_setup" in names and executor in ("docker", "sandbox")
        if in_containers or names & {"docker_engine", "pooled", "private_index"}:
            item.add_marker("docker")
        if "runs_setup" in names and executor == "local":
            item.add_marker("slow")  # real runs, as processes of this machine
        if "browser" in names:
            item.add_marker("browser")
        if "postgresql_outage" in names:
            item.add_marker("postgres")
        if item.path.name == "test_compose.py":
            item.add_marker("compose")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """SQLite tests use a file, not memory, so a worker process can share the test database."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        database.setdefault("TEST", {})["NAME"] = str(
            tmp_path_factory.getbasetemp() / f"test-db-{worker}.sqlite3"
        )


@pytest.fixture(scope="session", autouse=True)
def _processes_share_the_instance_keys():
    """Workers and web servers the tests start (with a DATA_DIR of their own) encrypt and
    sign with this process's keys, as one instance's processes do."""
    os.environ.setdefault("SECRET_KEY", settings.SECRET_KEY)
    os.environ.setdefault("ENCRYPTION_KEY", ",".join(settings.ENCRYPTION_KEYS))


@pytest.fixture(scope="session", autouse=True)
def _no_container_pool_unless_asked():
    """Workers keep no pooled containers in tests (each would make RUN_POOL_SIZE of them at
    start); the pool's own tests, and the lock-down tests run on pooled containers, ask."""
    os.environ.setdefault("RUN_POOL_SIZE", "0")
    override = override_settings(RUN_POOL_SIZE=0)
    override.enable()
    yield
    override.disable()


@pytest.fixture(scope="session", autouse=True)
def _runs_reach_the_servers_tests_start_for_them():
    """Runs reach only RUN_HOST_PORTS of this machine: a private index or a database relay
    a test starts for its runs listens on one of HOST_PORTS (on_a_host_port)."""
    ports = f"{HOST_PORTS[0]}-{HOST_PORTS[-1]}"
    os.environ["RUN_HOST_PORTS"] = ports
    override = override_settings(RUN_HOST_PORTS=[ports.replace("-", ":")])
    override.enable()
    yield
    override.disable()


@pytest.fixture(scope="session", autouse=True)
def _no_connection_left_in_asgirefs_thread():
    """Async tests reach the database from asgiref's shared thread; its connection must be
    closed before the test database is dropped (PostgreSQL refuses while it is open)."""
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def person(django_user_model, username: str, role: str | None):
    """A person with a verified address and exactly this role (None: no role at all)."""
    user = django_user_model.objects.create_user(
        username, f"{username}@example.com", f"pw-{username}"
    )
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    if role:
        set_role(user, role)
    return user


@pytest.fixture
def admin_user(django_user_model):
    """The instance's admin: every permission."""
    return person(django_user_model, "ada", Role.ADMIN)


@pytest.fixture
def operator(django_user_model):
    """Runs, cancels, manages schedules, webhook keys and parameters; not secrets or people."""
    return person(django_user_model, "otto", Role.OPERATOR)


@pytest.fixture
def viewer(django_user_model):
    """Reads everything but secret values and webhook keys; not the admin."""
    return person(django_user_model, "vic", Role.VIEWER)


@pytest.fixture
def stranger(django_user_model):
    """An account with no role (made by hand before roles existed): may read nothing."""
    return person(django_user_model, "sam", None)


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def pipelines_dir(tmp_path, settings) -> Path:
    """An empty PIPELINES_DIR for this test."""
    root = tmp_path / "pipelines"
    root.mkdir()
    settings.PIPELINES_DIR = root
    settings.PIPELINES_SUBDIR = ""
    return root


PipelineFactory = Callable[..., Path]


@pytest.fixture
def make_pipeline(pipelines_dir) -> PipelineFactory:
    """Write a pipeline folder: make_pipeline("name", config={...}, requirements="...")."""

    def make(
        name: str,
        *,
        config: dict | str | None = None,
        requirements: str | None = None,
        main: str | None = 'print("hi")\n',
        config_name: str = "pipeline.json",
    ) -> Path:
        folder = pipelines_dir / name
        folder.mkdir()
        if main is not None:
            (folder / "main.py").write_text(main)
        if config is not None:
            text = config if isinstance(config, str) else json.dumps(config)
            (folder / config_name).write_text(text)
        if requirements is not None:
            (folder / "requirements.txt").write_text(requirements)
        return folder

    return make


@pytest.fixture
def example_pipelines(pipelines_dir) -> Path:
    """The demo pipelines of examples/, copied (tests may change them)."""
    shutil.rmtree(pipelines_dir)
    shutil.copytree(EXAMPLES_DIR, pipelines_dir)
    return pipelines_dir


CHROMIUM = "/usr/bin/chromium"  # Debian's (ENVIRONMENT.md); its arguments: bench.common


@pytest.fixture
def browser():
    require(os.path.exists(CHROMIUM), "Debian's Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # The test's queries run beside Playwright's loop in a context whose connection an
        # earlier browser test left open — and an outage test since may have ended it:
        # never reused, never left behind.
        with _async_unsafe_allowed():
            connections.close_all()
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
        with _async_unsafe_allowed():
            connections.close_all()


@contextlib.contextmanager
def _async_unsafe_allowed() -> Iterator[None]:
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield
    finally:
        if before is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


class PostgresqlOutage:
    """The test database away from `begin()` to `end()` (or for a `with` block), as while
    PostgreSQL restarts: every connection to it ended, new ones refused (this test's own
    included)."""

    def __init__(self) -> None:
        if connection.vendor != "postgresql":
            pytest.skip("the PostgreSQL pass runs this")
        self.database = connection.settings_dict["NAME"]
        self.admin = psycopg.connect(
            host=connection.settings_dict["HOST"],
            port=connection.settings_dict["PORT"] or 5432,
            user=connection.settings_dict["USER"],
            password=connection.settings_dict["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
        )

    def begin(self) -> None:
        self.admin.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false')
        self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.database],
        )

    def end(self) -> None:
        self.admin.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')

    def __enter__(self) -> PostgresqlOutage:
        self.begin()
        return self

    def __exit__(self, *exc) -> None:
        self.end()
        connection.close()  # this thread's own was ended too


@pytest.fixture
def postgresql_outage() -> Iterator[PostgresqlOutage]:
    """A PostgresqlOutage for the test (skipped on SQLite); afterwards the database is
    back and the test's own connection, which the outage ended, is made anew."""
    outage = PostgresqlOutage()
    yield outage
    outage.end()
    outage.admin.close()
    connection.close()
    # And asgiref's thread's, where async tests (and consumers) reach the database.
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
