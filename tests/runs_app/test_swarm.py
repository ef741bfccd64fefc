"""The swarm executor's parts that need no Swarm: what a service is made of, what the
engine guard lets through, how the code travels and how the log's frames are read. On a
real Swarm: test_swarm_lab.py."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from engine_guard.policy import check_service_create, check_swarm_object_create
from runs_app.executors.base import MarkerReader, Outcome, RunSpec, Watch
from runs_app.executors.layout import LABEL_RUN
from runs_app.executors.swarm import PART_BYTES, delivery, split, task_template, variables
from runs_app.in_run import fastflow_markers


def good_service(image_id: str) -> dict:
    """A service as the swarm executor makes it (its secret and configs need not exist:
    the guard judges before the engine looks)."""
    from runs_app.executors.base import RunSpec
    from runs_app.executors.swarm import task_template

    spec = RunSpec("guard-test", "p", Path("."), "main.py", "", None, {})
    name = "fastflow-run-guard-test"
    template = task_template(
        spec, image_id, "s", f"{name}-env", [("c0", f"{name}-000"), ("c1", f"{name}-001")]
    )
    return {
        "Name": name,
        "Labels": {LABEL_RUN: "guard-test", "fastflow.purpose": "run"},
        "TaskTemplate": template,
        "Mode": {"Replicated": {"Replicas": 1}},
    }


def spec_change(**changes):
    def change(service: dict) -> None:
        service["TaskTemplate"]["ContainerSpec"].update(changes)

    return change


SERVICE_FORBIDDEN = {
    "root": (spec_change(User="0"), "non-root user"),
    "writable root": (spec_change(ReadOnly=False), "read-only"),
    "capabilities kept": (spec_change(CapabilityDrop=[]), "drop all capabilities"),
    "capability added": (spec_change(CapabilityAdd=["SYS_ADMIN"]), "CapabilityAdd"),
    "docker group": (spec_change(Groups=["docker"]), "Groups"),
    "host bind": (
        spec_change(Mounts=[{"Type": "bind", "Source": "/", "Target": "/host"}]),
        "only tmpfs and the fastflow-uv-cache volume",
    ),
    "cache written by a run": (
        spec_change(Mounts=[{"Type": "volume", "Source": "fastflow-uv-cache", "Target": "/c"}]),
        "read-only for runs",
    ),
    "another run's secret": (
        spec_change(
            Secrets=[{"SecretID": "x", "SecretName": "fastflow-run-other-env", "File": {}}]
        ),
        "its own secrets only",
    ),
    "published port": (
        lambda service: service.update(EndpointSpec={"Ports": [{"TargetPort": 80}]}),
        "published ports",
    ),
    "network": (
        lambda service: service["TaskTemplate"].update(Networks=[{"Target": "ingress"}]),
        "networks are not allowed",
    ),
    "unlabelled": (lambda service: service.pop("Labels"), "must carry the fastflow.run_id"),
    "many replicas": (
        lambda service: service.update(Mode={"Replicated": {"Replicas": 5}}),
        "one replicated task",
    ),
    "another image": (spec_change(Image="alpine:latest"), "not the worker image"),
}


def test_a_service_as_the_executor_makes_it_passes_the_guard():
    assert check_service_create(json.dumps(good_service("sha256:x")).encode(), {"sha256:x"}) == ""


@pytest.mark.parametrize("case", SERVICE_FORBIDDEN)
def test_the_guard_refuses_a_service_that_breaks_the_lock_down(case):
    change, reason = SERVICE_FORBIDDEN[case]
    service = good_service("sha256:x")
    change(service)
    assert reason in check_service_create(json.dumps(service).encode(), {"sha256:x"})


def test_secrets_and_configs_must_be_a_runs():
    good = {"Name": "fastflow-run-1-env", "Labels": {LABEL_RUN: "1"}}
    assert check_swarm_object_create(json.dumps(good).encode()) == ""
    assert "label" in check_swarm_object_create(json.dumps({"Name": "fastflow-run-1"}).encode())
    named = {"Name": "mine", "Labels": {LABEL_RUN: "1"}}
    assert "named" in check_swarm_object_create(json.dumps(named).encode())


def test_the_runs_variables_travel_in_its_secret_not_in_the_service_spec(settings):
    spec = RunSpec("r1", "p", Path("."), "main.py", "", None, {"API_TOKEN": "t0ken"})
    template = task_template(spec, "sha256:x", "s", "fastflow-run-r1-env", [("b", "boot")])
    assert "t0ken" not in json.dumps(template)
    assert variables(spec)["API_TOKEN"] == "t0ken"
    assert variables(spec)["UV_OFFLINE"] == "1"  # a run installs from the node's cache only


def test_code_and_tools_travel_as_parts_of_one_archive(tmp_path, settings):
    settings.RUN_CA_BUNDLE = ""
    (tmp_path / "main.py").write_text("print('hi')\n")
    (tmp_path / "data.bin").write_bytes(os.urandom(1024 * 1024))  # 1 MiB, not packable
    (tmp_path / "link.py").symlink_to("main.py")
    spec = RunSpec("r1", "p", tmp_path, "main.py", "", None, {})
    packed = delivery(spec)
    parts = split(packed)
    assert len(parts) > 1 and all(len(part) <= PART_BYTES for part in parts)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(b"".join(parts)))) as tar:
        names = tar.getnames()
        assert tar.getmember("pipeline/link.py").issym()
    assert {"pipeline/main.py", "pipeline/data.bin", "tools/prepare.sh"} <= set(names)


def test_a_sample_marker_feeds_the_live_charts_and_the_peaks():
    from runs_app.logs import LogWriter

    samples = []
    outcome = Outcome()
    reader = MarkerReader(
        LogWriter.__new__(LogWriter), outcome, Watch(on_sample=lambda c, m: samples.append((c, m)))
    )
    assert reader.marker("sample", json.dumps({"cpu": 50.5, "memory": 1024}), None)
    assert not reader.marker("sample", "not json", None)
    assert samples == [(50.5, 1024)]
    assert outcome.peak_cpu_percent == 50.5 and outcome.peak_memory_bytes == 1024
    assert fastflow_markers.parse(fastflow_markers.MARK + "sample {}") == ("sample", "{}")


def test_the_boot_script_names_the_cache_as_the_other_executors_do():
    from runs_app.executors import layout
    from runs_app.in_run import swarm_boot

    assert swarm_boot.WHEELHOUSE == layout.WHEELHOUSE_BUCKET
    assert swarm_boot.PER_RUN_CACHE_BUCKETS == layout.PER_RUN_CACHE_BUCKETS
    assert swarm_boot.MARK == fastflow_markers.MARK
