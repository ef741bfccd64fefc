"""What the engine guard lets through (`decide`): an allow-list of Docker API calls, and for
container creation, the confinement every run container must keep.

A container must be created as Fast-Flow creates runs and warm-ups: a non-root user, all
capabilities dropped, no-new-privileges, no privileged mode, devices, added capabilities,
host namespaces or weakened security profiles, no published ports, no volumes, and bind
mounts only under the allowed host paths (read-only where the allowance says so).
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
CONTAINER = r"/containers/(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
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
]
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
