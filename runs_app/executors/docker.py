"""DockerExecutor: every run in its own fresh, locked-down container from WORKER_IMAGE.

Three rooms: this one starts, finds and removes run containers; `layout` says what each
one is given (the lock-down, docs/execution.md); `follower` follows one to its end. The
engine is reached through `engine` (the one translation of its errors; docker-py's
private calls). Pooled containers (`pool`) are made from the same layout, ahead of time.
"""

from __future__ import annotations

import docker
from django.conf import settings
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount

from runs_app.executors import engine
from runs_app.executors.base import (
    ExecutorError,
    Outcome,
    RunSpec,
    Watch,
    ensure_data_folder,
)
from runs_app.executors.follower import ContainerFollower
from runs_app.executors.layout import (
    CODE_DIR,
    DATA_MOUNT,
    IMAGE_VERSION,
    IMAGE_VERSION_LABEL,
    LABEL_PIPELINE,
    LABEL_RUN,
    RUN_NAME_PREFIX,
    RUN_UID,
    RUN_USER,
    container_layout,
    host_config,
    run_command,
    run_container_name,
    run_environment,
    waits_for_hand_over,
)
from runs_app.logs import LogWriter

BUILD_HINT = (
    "build it with `bash runs_app/worker_image/build-offline.sh` (no registry needed) "
    "or `docker build -t {image} runs_app/worker_image`"
)
NEWER_PYTHON_HINT = (
    "it is the image PYTHON_IMAGES names for the pipeline's python_version; build it with "
    "`SUITE=trixie bash runs_app/worker_image/build-offline.sh {image}` (Python 3.13) or "
    "`docker build --build-arg PYTHON=3.13 -t {image} runs_app/worker_image`"
)


class DockerExecutor:
    name = "docker"
    follower = ContainerFollower  # what follows a started run to its end (swarm: a service)

    def __init__(self) -> None:
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = engine.connect()
        return self._client

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    def check(self) -> None:
        with engine.reachable(also=(DockerException,)):
            self.api.ping()

    # --- starting --------------------------------------------------------------------------

    def start(self, spec: RunSpec, log: LogWriter, watch: Watch) -> Outcome:
        with engine.reachable("stopped answering"):
            container_id = self._create(spec)
        watch.on_started(container_id)
        try:
            with engine.reachable("stopped answering"):
                self.api.start(container_id)
        except APIError as exc:
            self.remove(container_id)
            raise ExecutorError("internal_error", f"The container did not start: {exc}") from exc
        return self.follower(self.api, container_id, spec, log, watch, {}).follow()

    def reattach(
        self,
        spec: RunSpec,
        handle: str,
        log: LogWriter,
        watch: Watch,
        resume_after: dict[str, str],
    ) -> Outcome:
        return self.follower(self.api, handle, spec, log, watch, resume_after).follow()

    def check_image(self, image: str = "") -> str:
        """The id of `image` (WORKER_IMAGE when not given); ExecutorError (image_missing)
        unless it is there and of this version."""
        image = image or settings.WORKER_IMAGE
        try:
            found = self.api.inspect_image(image)
            labels = found["Config"].get("Labels") or {}
        except ImageNotFound:
            raise ExecutorError(
                "image_missing",
                f"The worker image {image} is not on this machine; "
                + (BUILD_HINT if image == settings.WORKER_IMAGE else NEWER_PYTHON_HINT).format(
                    image=image
                ),
            ) from None
        if labels.get(IMAGE_VERSION_LABEL) != IMAGE_VERSION:
            raise ExecutorError(
                "image_missing",
                f"The worker image {image} was built for an older Fast-Flow (version "
                f"{labels.get(IMAGE_VERSION_LABEL, '1')}, this one needs {IMAGE_VERSION}); "
                "rebuild it with `FORCE=1 bash runs_app/worker_image/build-offline.sh` "
                f"or `docker build -t {image} runs_app/worker_image`",
            )
        return found["Id"]

    def _create(self, spec: RunSpec) -> str:
        image = spec.image or settings.WORKER_IMAGE
        self.check_image(image)
        layout = container_layout(self.api, warm=spec.purpose == "warm")
        mounts = [Mount(CODE_DIR, str(spec.folder), type="bind", read_only=True), *layout.mounts]
        if spec.data_dir is not None and spec.purpose == "run":
            # The pipeline's own persistent folder (pipeline.json data_folder), its runs only.
            ensure_data_folder(spec.data_dir, RUN_UID)
            mounts.append(Mount(DATA_MOUNT, str(spec.data_dir), type="bind"))
            layout.env["FASTFLOW_DATA_DIR"] = DATA_MOUNT
        limits = host_config(
            self.api,
            mounts,
            layout.tmpfs,
            spec.mem_hard_limit_bytes,
            spec.cpu_hard_limit,
            network=spec.network or spec.purpose == "warm",
        )
        try:
            created = self.api.create_container(
                image,
                command=run_command(spec),
                name=run_container_name(spec.run_id),
                labels={LABEL_RUN: spec.run_id, LABEL_PIPELINE: spec.pipeline},
                environment=run_environment(spec, layout),
                working_dir=CODE_DIR,
                user=RUN_USER,
                host_config=limits,
            )
        except APIError as exc:
            raise ExecutorError("internal_error", f"The container was refused: {exc}") from exc
        return created["Id"]

    # --- housekeeping ------------------------------------------------------------------------

    def find(self, run_id: str) -> str | None:
        """By name: a pooled container has the run's name, not its label (labels are fixed
        when a container is made, before the run was known)."""
        name = run_container_name(run_id)
        with engine.reachable():
            found = self.api.containers(
                all=True, filters={"label": LABEL_RUN, "name": f"^/{name}$"}
            )
        return found[0]["Id"] if found else None

    def state(self, handle: str) -> str | None:
        try:
            with engine.reachable():
                attrs = self.api.inspect_container(handle)
        except NotFound:
            return None
        if waits_for_hand_over(attrs):
            return "created"  # a pooled container still waiting: the run never began in it
        return attrs["State"]["Status"]

    def labelled_containers(self) -> dict[str, str]:
        """{run id: container} of every run container, pooled ones once they hold a run."""
        with engine.reachable():
            containers = self.api.containers(all=True, filters={"label": LABEL_RUN})
        found = {}
        for container in containers:
            name = (container.get("Names") or [""])[0].lstrip("/")
            run_id = container["Labels"].get(LABEL_RUN) or name.removeprefix(RUN_NAME_PREFIX)
            if run_id and name.startswith(RUN_NAME_PREFIX):
                found[run_id] = container["Id"]
        return found

    def remove(self, handle: str) -> None:
        try:
            with engine.reachable():
                self.api.remove_container(handle, force=True, v=True)
        except NotFound:
            pass
        except APIError as exc:
            if "already in progress" not in str(exc):
                raise
