"""A sandboxed run's own network namespace: a veth pair to the host, NAT out of the host's
default route, and nothing else — the recipe a container engine uses, without the engine.

Each run gets a /30 of SANDBOX_NETWORK by its place number (the host's end .1, the run's
.2). The host's firewall (chains of our own, made once and kept) lets a run's packets out
through the default route's interfaces and their answers back in; everything else from a
run is refused: the host itself on any of its addresses but RUN_HOST_PORTS (INPUT:
host_firewall.py), other runs, container networks and any other interface (FORWARD). IPv6
is off on the host's end, so the run has no link-local way to the host either. A run with
`"network": false` gets no namespace of ours: bubblewrap gives it an empty one (loopback
only).
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import threading
from pathlib import Path

from django.conf import settings

from runs_app.executors import host_firewall
from runs_app.executors.host_firewall import FirewallError, ensure_rule, iptables, machine_lock

NAMESPACE_PREFIX = "fastflow-run-"
HOST_SIDE, RUN_SIDE = "ffh", "ffr"  # + the place number; interface names ≤ 15 characters
CHAIN = "FASTFLOW-SANDBOX"
NETNS_DIR = Path("/var/run/netns")
_firewall_ready = threading.Event()
_tools_found = threading.Event()
_firewall_lock = threading.Lock()


class NetworkError(FirewallError):
    """A run's network, or the host's rules for them, could not be made."""


def available() -> str:
    """Why run networks cannot be made here ("" when they can; then not asked again)."""
    if _tools_found.is_set():
        return ""
    for tool in ("ip", "iptables", "iptables-restore", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2, iptables, util-linux)"
    _tools_found.set()
    return ""


class RunNetwork:
    def __init__(self, place: int) -> None:
        self.place = place
        self.namespace = f"{NAMESPACE_PREFIX}{place}"
        self.host_side, self.run_side = f"{HOST_SIDE}{place}", f"{RUN_SIDE}{place}"
        network = ipaddress.ip_network(settings.SANDBOX_NETWORK)
        if (place + 1) * 4 > network.num_addresses:
            raise NetworkError(f"SANDBOX_NETWORK {network} has no room for place {place}")
        base = network.network_address + place * 4
        self.gateway, self.address = base + 1, base + 2

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.namespace

    def create(self) -> None:
        ensure_firewall()
        self.remove()  # a dead worker's leftover of the same place
        _ip("netns", "add", self.namespace)
        _ip(
            "link", "add", self.host_side, "type", "veth",
            "peer", "name", self.run_side, "netns", self.namespace,
        )  # fmt: skip
        Path(f"/proc/sys/net/ipv6/conf/{self.host_side}/disable_ipv6").write_text("1\n")
        _ip_batch(
            [
                f"addr add {self.gateway}/30 dev {self.host_side}",
                f"link set {self.host_side} up",
            ]
        )
        _ip_batch(
            [
                "link set lo up",
                f"addr add {self.address}/30 dev {self.run_side}",
                f"link set {self.run_side} up",
                f"route add default via {self.gateway}",
            ],
            namespace=self.namespace,
        )

    def remove(self) -> None:
        """Idempotent: the namespace (its end of the pair goes with it), then the host's end
        if it was left."""
        if self.path.exists():
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, check=False)  # noqa: S603, S607
        if Path(f"/sys/class/net/{self.host_side}").exists():
            subprocess.run(["ip", "link", "del", self.host_side], capture_output=True, check=False)  # noqa: S603, S607


def existing() -> list[int]:
    """Places whose namespace exists on this machine."""
    try:
        names = [entry.name for entry in NETNS_DIR.iterdir()]
    except FileNotFoundError:
        return []
    return sorted(
        int(name.removeprefix(NAMESPACE_PREFIX))
        for name in names
        if name.startswith(NAMESPACE_PREFIX) and name.removeprefix(NAMESPACE_PREFIX).isdigit()
    )


def ensure_firewall() -> None:
    """The host's rules for run networks, made once per process (idempotently: other worker
    processes of this machine make the same ones)."""
    try:
        if not _firewall_ready.is_set():
            _make_firewall()
        # The host itself, on any of its addresses (the run's gateway included): only
        # RUN_HOST_PORTS (a set lookup once made; written again if the setting changes).
        host_firewall.guard(f"{HOST_SIDE}+")
        if not _firewall_ready.is_set():
            # The sandbox's own INPUT rule of before goes (the guard's chain ends the same).
            iptables("-D", "INPUT", "-i", f"{HOST_SIDE}+", "-j", "REJECT", allowed_failure=True)
            _firewall_ready.set()
    except FirewallError as exc:
        raise NetworkError(str(exc)) from exc


def _make_firewall() -> None:
    with _firewall_lock, machine_lock():
        if _firewall_ready.is_set():
            return
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        subnet = settings.SANDBOX_NETWORK
        outward = default_route_interfaces()
        if not outward:
            raise NetworkError("this machine has no default route: runs could not get out")
        iptables("-N", CHAIN, allowed_failure=True)
        for rule in [
            *(["-i", f"{HOST_SIDE}+", "-o", name, "-j", "ACCEPT"] for name in outward),
            ["-o", f"{HOST_SIDE}+", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
             "-j", "ACCEPT"],
            ["-i", f"{HOST_SIDE}+", "-j", "REJECT"],
            ["-o", f"{HOST_SIDE}+", "-j", "DROP"],
        ]:  # fmt: skip
            ensure_rule(CHAIN, rule)
        ensure_rule("FORWARD", ["-j", CHAIN], first=True)
        for name in outward:
            masquerade = ["-s", subnet, "-o", name, "-j", "MASQUERADE"]
            ensure_rule("POSTROUTING", masquerade, table="nat")


def default_route_interfaces() -> list[str]:
    command = ["ip", "-o", "route", "show", "default"]
    output = subprocess.run(command, capture_output=True, text=True, check=False).stdout  # noqa: S603
    names = []
    for line in output.splitlines():
        words = line.split()
        if "dev" in words:
            names.append(words[words.index("dev") + 1])
    return sorted(set(names))


def _ip(*words: str) -> None:
    done = subprocess.run(["ip", *words], capture_output=True, text=True, check=False)  # noqa: S603, S607
    if done.returncode:
        raise NetworkError(f"ip {' '.join(words)}: {done.stderr.strip()}")


def _ip_batch(commands: list[str], namespace: str = "") -> None:
    prefix = ["-n", namespace] if namespace else []
    done = subprocess.run(  # noqa: S603
        ["ip", *prefix, "-batch", "-"],  # noqa: S607 - iproute2's ip, found on PATH
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise NetworkError(f"ip {' '.join(prefix)} -batch: {done.stderr.strip()}")
