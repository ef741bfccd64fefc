"""What the engine guard lets through (`decide`): an allow-list of Docker API calls, and for
container creation, the confinement every run container must keep.

A container must be created as Fast-Flow creates runs and warm-ups: a non-root user, all
capabilities dropped, no-new-privileges, no privileged mode, devices, added capabilities,
host namespaces or weakened security profiles, no published ports, no volumes, and bind
mounts only under the allowed host paths (read-only where the allowance says so).

On a Swarm manager (the swarm executor) the same for services: Fast-Flow's labelled
services only, as it makes them — a non-root user, a read-only root, every capability
dropped, no added capabilities, groups or privileges, no published ports or networks, no
bind mounts, the node's uv cache the only volume (read-only but for warm-ups), and only
the run's own secret and configs (named after its service); secrets and configs made
with Fast-Flow's run label only. Nodes may be read, never changed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

RUN_LABEL = "fastflow.run_id"
POOL_LABEL = "fastflow.pool"
VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
OBJECT_ID = r"(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
CONTAINER = r"/containers/" + OBJECT_ID
SERVICE, SECRET, CONFIG = (f"/{kind}/" + OBJECT_ID for kind in ("services", "secrets", "configs"))
# (method, path) a run needs; `container` ones are about one existing container.
ALLOWED = [
    ("GET", r"/_ping", None),
    ("HEAD", r"/_ping", None),
    ("GET", r"/version", None),
    ("GET", r"/info", None),
    ("GET", r"/images/(?P<image>.+)/json", None),
    ("GET", r"/containers/json", None),
    ("POST", r"/containers/create", None),
    ("GET", CONTAINER + r"/json", "container"),
    # rename and update: a pooled container becomes its run's (runs_app/executors/pool.py).
    ("POST", CONTAINER + r"/(start|stop|kill|wait|rename|update)", "container"),
    ("GET", CONTAINER + r"/(logs|stats)", "container"),
    ("DELETE", CONTAINER, "container"),
    ("GET", r"/events", None),
    ("GET", r"/networks", None),
    ("GET", r"/networks/(?P<network>[A-Za-z0-9][A-Za-z0-9_.-]*)", None),
    ("POST", r"/networks/create", None),
    # Swarm (the swarm executor): the kinds named in OWNED, Fast-Flow's own objects only.
    ("GET", r"/services", None),
    ("POST", r"/services/create", None),
    ("GET", SERVICE, "service"),
    ("DELETE", SERVICE, "service"),
    ("GET", SERVICE + r"/logs", "service"),
    ("GET", r"/tasks", None),
    ("GET", r"/nodes", None),
    ("GET", r"/nodes/(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})", None),
    ("GET", r"/secrets", None),
    ("POST", r"/secrets/create", None),
    ("GET", SECRET, "secret"),
    ("DELETE", SECRET, "secret"),
    ("GET", r"/configs", None),
    ("POST", r"/configs/create", None),
    ("GET", CONFIG, "config"),
    ("DELETE", CONFIG, "config"),
]
SWARM_LISTS = {"/services", "/secrets", "/configs"}  # listed with the run label filter only
CACHE_VOLUME = "fastflow-uv-cache"
RUN_NAME_PREFIX = "fastflow-run-"
ALLOWED_SECURITY_OPTS = {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"}
SHARED_NAMESPACE = re.compile(r"^(host|container:.*)$")


@dataclass(frozen=True)
class Allowance:
    """A host path under which bind mounts are allowed; read-only unless `writable`."""

    path: str
    writable: bool

    @classmethod
    def parse(cls, text: str) -> list[Allowance]:
        """ "/srv/ff/pipelines:ro,/srv/ff/data/uv_cache:rw" (ro when no mode is given)."""
        allowances = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            path, _, mode = (
                item.rpartition(":") if item.endswith((":ro", ":rw")) else (item, "", "ro")
            )
            if not os.path.isabs(path):
                raise ValueError(f"{path!r}: allowed mount paths must be absolute")
            allowances.append(cls(os.path.normpath(path), mode == "rw"))
        return allowances

    def covers(self, source: str) -> bool:
        return source == self.path or source.startswith(self.path.rstrip("/") + "/")


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the API version prefix and the query
    query: dict[str, list[str]]
    body: bytes


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    path, _, query = target.partition("?")
    return VERSION_PREFIX.sub("", path), parse_qs(query)


def match(method: str, path: str) -> tuple[re.Match, str | None] | None:
    for allowed_method, pattern, kind in ALLOWED:
        found = re.fullmatch(pattern, path)
        if found and allowed_method == method:
            return found, kind
    return None


def lists_runs_only(query: dict[str, list[str]]) -> bool:
    """A container list filtered by Fast-Flow's run label (`label` filter), nothing wider."""
    return RUN_LABEL in filtered_labels(query)


def watches_pool_only(query: dict[str, list[str]]) -> bool:
    """An event stream filtered by the pool's label: what happens to pooled containers."""
    return POOL_LABEL in filtered_labels(query)


def filtered_labels(query: dict[str, list[str]]) -> set[str]:
    """The label names a list or event query is filtered by."""
    try:
        filters = json.loads(query.get("filters", ["{}"])[0])
    except ValueError:
        return set()
    labels = filters.get("label", []) if isinstance(filters, dict) else []
    if isinstance(labels, dict):  # {"label": {"fastflow.run_id=x": true}} (older clients)
        labels = list(labels)
    return {label.split("=", 1)[0] for label in labels if isinstance(label, str)}


def check_create(body: bytes, allowances: list[Allowance], resolve=os.path.realpath) -> str:
    """Why this container-create is refused ("" when it keeps a run's confinement)."""
    try:
        config = json.loads(body or b"{}")
    except ValueError:
        return "the body is not JSON"
    if not isinstance(config, dict):
        return "the body is not a JSON object"
    host = config.get("HostConfig") or {}
    user = str(config.get("User") or "")
    if user.split(":")[0] in ("", "0", "root"):
        return "containers must run as a non-root user"
    if host.get("Privileged"):
        return "privileged mode is not allowed"
    if host.get("CapAdd"):
        return f"added capabilities are not allowed ({', '.join(host['CapAdd'])})"
    if "ALL" not in [cap.upper() for cap in host.get("CapDrop") or []]:
        return "containers must drop all capabilities (CapDrop: ALL)"
    for key in ("Devices", "DeviceRequests", "DeviceCgroupRules"):
        if host.get(key):
            return f"devices are not allowed ({key})"
    for key in ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode"):
        if SHARED_NAMESPACE.match(str(host.get(key) or "")):
            return f"{key} {host[key]!r} shares a namespace with the host or another container"
    options = host.get("SecurityOpt") or []
    weakening = [opt for opt in options if opt not in ALLOWED_SECURITY_OPTS]
    if weakening:
        return f"security options other than no-new-privileges are not allowed ({weakening})"
    if not set(options) & ALLOWED_SECURITY_OPTS:
        return "containers must set no-new-privileges"
    for key in ("Sysctls", "PortBindings", "VolumesFrom", "Links", "CgroupParent"):
        if host.get(key):
            return f"{key} is not allowed"
    if host.get("Runtime") not in (None, "", "runc"):
        return f"the runtime {host['Runtime']!r} is not allowed"
    if host.get("PublishAllPorts"):
        return "published ports are not allowed"
    if config.get("Volumes"):
        return "volumes are not allowed"
    return _check_mounts(host, allowances, resolve)


def _check_mounts(host: dict, allowances: list[Allowance], resolve) -> str:
    binds = []
    for bind in host.get("Binds") or []:
        parts = str(bind).split(":")
        if len(parts) < 2 or not parts[0].startswith("/"):
            return f"{bind!r}: only bind mounts of host paths are allowed, not volumes"
        binds.append((parts[0], "ro" in (parts[2].split(",") if len(parts) > 2 else [])))
    for mount in host.get("Mounts") or []:
        kind = mount.get("Type", "volume")
        if kind == "tmpfs":
            continue
        if kind != "bind":
            return f"{kind} mounts are not allowed (only bind mounts and tmpfs)"
        binds.append((str(mount.get("Source", "")), bool(mount.get("ReadOnly"))))
    for source, read_only in binds:
        # The engine follows links in the source: judge where it really leads (the guard
        # sees the allowed host paths at the same place).
        real = os.path.normpath(resolve(source))
        # The most specific allowance decides (DATA_DIR read-only, its uv cache writable).
        covering = [a for a in allowances if a.covers(real)]
        allowance = max(covering, key=lambda a: len(a.path), default=None)
        if allowance is None:
            return f"the bind mount of {source} is outside the allowed paths"
        if not read_only and not allowance.writable:
            return f"the bind mount of {source} must be read-only"
    return ""


def check_network_create(body: bytes) -> str:
    try:
        config = json.loads(body or b"{}")
    except ValueError:
        return "the body is not JSON"
    if config.get("Driver", "bridge") != "bridge":
        return "only bridge networks may be made"
    if (config.get("Labels") or {}).get("fastflow.network") != "runs":
        return "only Fast-Flow's run network may be made"
    return ""


def filtered(query: dict[str, list[str]], key: str) -> list[str]:
    """The values a list query is filtered by under `key` ("service", "label", …)."""
    try:
        filters = json.loads(query.get("filters", ["{}"])[0])
    except ValueError:
        return []
    values = filters.get(key, []) if isinstance(filters, dict) else []
    if isinstance(values, dict):
        values = list(values)
    return [value for value in values if isinstance(value, str)]


def check_swarm_object_create(body: bytes) -> str:
    """A secret or config: Fast-Flow's run label, a run's name."""
    try:
        config = json.loads(body or b"{}")
    except ValueError:
        return "the body is not JSON"
    if not isinstance(config, dict):
        return "the body is not a JSON object"
    if RUN_LABEL not in (config.get("Labels") or {}):
        return f"secrets and configs must carry the {RUN_LABEL} label"
    if not str(config.get("Name", "")).startswith(RUN_NAME_PREFIX):
        return f"secrets and configs must be named {RUN_NAME_PREFIX}…"
    return ""


def check_service_create(body: bytes, image_ids: set[str] | None) -> str:
    """Why this service-create is refused ("" when its task keeps a run's confinement).
    `image_ids`: the ids of the allowed images (None: any image)."""
    try:
        service = json.loads(body or b"{}")
    except ValueError:
        return "the body is not JSON"
    if not isinstance(service, dict):
        return "the body is not a JSON object"
    name = str(service.get("Name") or "")
    if RUN_LABEL not in (service.get("Labels") or {}) or not name.startswith(RUN_NAME_PREFIX):
        return f"services must carry the {RUN_LABEL} label and a run's name"
    mode = service.get("Mode") or {}
    replicas = (mode.get("Replicated") or {}).get("Replicas", 1)
    if set(mode) - {"Replicated", "Global"} or ("Replicated" in mode and replicas > 1):
        return "a run is one replicated task (or a warm-up, one per node)"
    if (service.get("EndpointSpec") or {}).get("Ports"):
        return "published ports are not allowed"
    task = service.get("TaskTemplate") or {}
    if service.get("Networks") or task.get("Networks"):
        return "networks are not allowed (runs use each node's default bridge)"
    spec = task.get("ContainerSpec") or {}
    if image_ids is not None and spec.get("Image") not in image_ids:
        return f"the image {spec.get('Image')!r} is not the worker image (by its id)"
    if str(spec.get("User") or "").split(":")[0] in ("", "0", "root"):
        return "containers must run as a non-root user"
    if not spec.get("ReadOnly"):
        return "the root file system must be read-only"
    if "ALL" not in [cap.upper() for cap in spec.get("CapabilityDrop") or []]:
        return "containers must drop all capabilities (CapabilityDrop: ALL)"
    for key in ("CapabilityAdd", "Groups", "Privileges", "Sysctls", "Isolation"):
        if spec.get(key):
            return f"{key} is not allowed"
    warm = (service.get("Labels") or {}).get("fastflow.purpose") == "warm"
    for mount in spec.get("Mounts") or []:
        kind = mount.get("Type", "volume")
        if kind == "tmpfs":
            continue
        if kind != "volume" or mount.get("Source") != CACHE_VOLUME:
            return f"only tmpfs and the {CACHE_VOLUME} volume may be mounted"
        if mount.get("VolumeOptions"):
            return "volume options are not allowed"
        if not mount.get("ReadOnly") and not warm:
            return f"the {CACHE_VOLUME} volume is read-only for runs"
    for kind in ("Secrets", "Configs"):
        for reference in spec.get(kind) or []:
            if not str(reference.get(f"{kind[:-1]}Name", "")).startswith(f"{name}-"):
                return f"a run may use its own {kind.lower()} only"
    return ""
