"""docker-stack.yml, the deployment on a Docker Swarm (docs/swarm.md): what it promises."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess

import pytest
import yaml
from django.conf import settings

from runs_app.follow import wait_for

STACK = settings.BASE_DIR / "docker-stack.yml"


def stack() -> dict:
    return yaml.safe_load(STACK.read_text())


def test_the_stack_holds_the_whole_instance():
    assert set(stack()["services"]) == {"web", "worker", "engine-guard", "db", "redis"}


def test_the_worker_has_the_swarm_place_its_runs_through_the_guard_on_a_manager():
    services = stack()["services"]
    worker = services["worker"]["environment"]
    assert worker["FASTFLOW_EXECUTOR"] == "swarm"
    assert worker["DOCKER_HOST"] == "tcp://engine-guard:2375"
    guard = services["engine-guard"]
    assert guard["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in guard["volumes"]
    # Only the worker and the guard are on the guard's network, and it leads nowhere else.
    on_engine = {
        name for name, service in services.items() if "engine" in service.get("networks", [])
    }
    assert on_engine == {"worker", "engine-guard"}
    assert stack()["networks"]["engine"]["internal"] is True


def test_keys_and_passwords_are_swarm_secrets_never_values():
    text = STACK.read_text()
    services = stack()["services"]
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert {"SECRET_KEY_FILE", "ENCRYPTION_KEY_FILE", "DATABASE_URL_FILE"} <= set(env)
        assert not {"SECRET_KEY", "ENCRYPTION_KEY", "DATABASE_URL"} & set(env)
    assert services["db"]["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    assert all(secret["external"] for secret in stack()["secrets"].values())
    assert "PASSWORD:" not in text.replace("PASSWORD_FILE:", "")


@pytest.mark.docker
def test_docker_reads_the_stack_file():
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    shown = subprocess.run(
        ["docker", "stack", "config", "-c", str(STACK)], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "engine-guard" in shown.stdout


# --- deployed for real, on a Swarm of two engines (tests/lab.py) ---------------------------

IMAGES = {
    "FASTFLOW_IMAGE": "fastflow-app:offline",
    "POSTGRES_IMAGE": "fastflow-postgres:offline",
    "REDIS_IMAGE": "fastflow-redis:offline",
}
# What the lab changes: everything on the manager (only it has these images), and the
# guard given the manager's own socket (the lab's engines listen on sockets of their own).
LAB_OVERRIDE = """
services:
  web: {deploy: {placement: {constraints: [node.role == manager]}}}
  worker: {deploy: {placement: {constraints: [node.role == manager]}}}
  redis: {deploy: {placement: {constraints: [node.role == manager]}}}
  engine-guard:
    volumes: ["%s:/var/run/docker.sock"]
"""


@pytest.fixture
def deployed(tmp_path):
    """docker-stack.yml deployed as docs/swarm.md says, on a lab Swarm: (manager, web)."""
    from tests import lab as lab_module
    from tests.runs_app.conftest import require

    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.skip("the labs run in the PostgreSQL pass (the stack brings its own)")
    if why := lab_module.available():
        pytest.skip(why)
    present = [
        image
        for image in IMAGES.values()
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
        == 0
    ]
    require(len(present) == len(IMAGES), "the images of .ci/compose/build-images.sh")
    lab = lab_module.Lab(
        ["k1", "k2"],
        engine_options=("--no-new-privileges", "--icc=false"),
        bridge="ffstack0",
        subnet="10.234.0",
    )
    lab.up([settings.WORKER_IMAGE])
    try:
        lab.swarm()
        manager = lab.engines[0]
        for image in IMAGES.values():
            lab._load(manager, image)
        manager.docker(
            "node", "update", "--label-add", "fastflow.db=true", manager.node_id,
            check=True, capture_output=True,
        )  # fmt: skip
        password = secrets.token_urlsafe(16)
        for name, value in {
            "fastflow_secret_key": secrets.token_urlsafe(50),
            "fastflow_encryption_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "fastflow_database_url": f"postgres://fastflow:{password}@db:5432/fastflow",
            "fastflow_db_password": password,
        }.items():
            manager.docker(
                "secret", "create", name, "-", input=value, text=True, check=True,
                capture_output=True,
            )  # fmt: skip
        # A lab's engines keep their data: no volume of an earlier deployment stays.
        manager.docker(
            "volume", "rm", "-f", *(f"fastflow_{v}" for v in ("db", "web-data", "worker-data")),
            capture_output=True,
        )  # fmt: skip
        override = tmp_path / "lab.yml"
        override.write_text(LAB_OVERRIDE % manager.socket.removeprefix("unix://"))
        deploy = manager.docker(
            "stack", "deploy", "-c", str(STACK), "-c", str(override), "fastflow",
            env={**os.environ, **IMAGES}, capture_output=True, text=True,
        )  # fmt: skip
        assert deploy.returncode == 0, deploy.stderr

        def web() -> str:
            found = manager.docker(
                "ps", "-q", "--filter", "label=com.docker.swarm.service.name=fastflow_web",
                "--filter", "status=running", capture_output=True, text=True,
            )  # fmt: skip
            return found.stdout.split()[0] if found.stdout.split() else ""

        def healthy() -> bool:
            container = web()
            return bool(container) and manager.docker(
                "exec", container, "python", "-c",
                "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/')",
                capture_output=True,
            ).returncode == 0  # fmt: skip

        assert wait_for(healthy, timeout=300), stack_logs(manager)
        yield manager, web()
    finally:
        (tmp_path / "stack.log").write_text(stack_logs(lab.engines[0]))
        lab.engines[0].docker("stack", "rm", "fastflow", capture_output=True)
        lab.down()  # (its volumes go with the next deployment's first step)


def stack_logs(manager) -> str:
    return "\n".join(
        manager.docker(
            "service", "logs", "--tail", "40", f"fastflow_{name}", capture_output=True, text=True
        ).stdout
        for name in ("web", "worker", "engine-guard", "db")
    )


@pytest.mark.docker
@pytest.mark.lab
def test_the_stack_deploys_on_a_swarm_and_runs_a_pipeline_there(deployed):
    manager, web = deployed
    made = manager.docker(
        "exec", web, "sh", "-c",
        "mkdir -p /data/pipelines/hello && "
        "echo \"print('hello from the swarm')\" > /data/pipelines/hello/main.py && "
        "python manage.py discover",
        capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    ran = manager.docker(
        "exec", web, "python", "manage.py", "runpipeline", "hello", "--follow",
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr + stack_logs(manager)
    assert "hello from the swarm" in ran.stdout
    assert "with the swarm executor" in ran.stdout
    guard = manager.docker(
        "service", "logs", "fastflow_engine-guard", capture_output=True, text=True
    )
    assert "passed POST /services/create" in guard.stdout + guard.stderr
