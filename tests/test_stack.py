"""docker-stack.yml, the deployment on a Docker Swarm (docs/swarm.md): what it promises."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from django.conf import settings

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
