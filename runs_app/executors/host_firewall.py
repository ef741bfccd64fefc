"""What runs may reach of the machine they run on: its TCP ports named in RUN_HOST_PORTS, and
nothing else — not services listening on all its addresses, nor on the address a run sees
as its gateway.

Packets from runs to the host itself arrive on the host's end of their network (the Docker
run network's bridge; each sandbox's veth), and the firewall's INPUT chain sends them to one
chain of ours, FASTFLOW-RUN-HOST: answers to connections the host opened, the allowed ports,
then REJECT (a refusal at once, not a timeout). Traffic out of the machine does not pass
INPUT, so runs still reach the network; Docker's embedded DNS answers inside the run's own
namespace. The chain is written whole and at once (iptables-restore), so every worker
process of a machine must agree on RUN_HOST_PORTS.

This needs root on the machine whose firewall it is — the worker's own, with the engine's
bridge in its network namespace. Where that does not hold (a worker in a container, an
engine elsewhere), `unguarded` says why, and docs/execution.md gives the rule to add by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

CHAIN = "FASTFLOW-RUN-HOST"
LOCK = Path("/run/fastflow-firewall.lock")
_lock = threading.Lock()
_guarded: set[str] = set()  # interfaces whose INPUT rule this process made sure of
_written: list[str] | None = None  # the ports this process last wrote the chain with


class FirewallError(Exception):
    pass


def unguarded(interface: str) -> str:
    """Why runs arriving on `interface` cannot be kept from the host here ("" when they can)."""
    if not interface.endswith("+") and not Path("/sys/class/net", interface).exists():
        return (
            f"the run network's bridge ({interface}) is not in this worker's network namespace "
            "(a worker in a container, or an engine on another machine)"
        )
    if os.geteuid() != 0:
        return "the worker is not root, so it cannot change this machine's firewall"
    if shutil.which("iptables") is None or shutil.which("iptables-restore") is None:
        return "iptables is not installed"
    return ""


def guard(interface: str) -> None:
    """Runs arriving on `interface` (or a family of them, `ffh+`) reach only RUN_HOST_PORTS
    of the host. Idempotent; made once per interface and process."""
    global _written
    ports = list(settings.RUN_HOST_PORTS)
    if interface in _guarded and _written == ports:
        return
    with _lock, machine_lock():
        if _written != ports:
            _write_chain(ports)
            _written = ports
        ensure_rule("INPUT", ["-i", interface, "-j", CHAIN], first=True)
        _guarded.add(interface)


def _write_chain(ports: list[str]) -> None:
    lines = [
        "*filter",
        f":{CHAIN} - [0:0]",  # made, or emptied, as the rest is written
        f"-A {CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        *(
            f"-A {CHAIN} -p tcp -m multiport --dports {','.join(group)} -j ACCEPT"
            for group in port_groups(ports)
        ),
        f"-A {CHAIN} -j REJECT",
        "COMMIT",
    ]
    done = subprocess.run(
        ["iptables-restore", "--noflush", "-w", "5"],  # noqa: S607 - found on PATH (unguarded)
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise FirewallError(f"iptables-restore: {done.stderr.strip()}")


def port_groups(ports: list[str]) -> Iterator[list[str]]:
    """The ports in groups one multiport match takes: 15 ports at most, a range counting 2."""
    group: list[str] = []
    for port in ports:
        if sum(2 if ":" in p else 1 for p in [*group, port]) > 15:
            yield group
            group = []
        group.append(port)
    if group:
        yield group


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Between worker processes of this machine: checking a rule and adding it is two
    iptables calls, and two processes doing both at once would add it twice."""
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_rule(chain: str, rule: list[str], *, table: str = "filter", first: bool = False) -> None:
    """Add the rule to the chain (at its end, or `first`) unless it is there already."""
    if iptables("-t", table, "-C", chain, *rule, allowed_failure=True):
        return
    iptables("-t", table, *(["-I", chain, "1"] if first else ["-A", chain]), *rule)


def iptables(*words: str, allowed_failure: bool = False) -> bool:
    command = ["iptables", "-w", "5", *words]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode and not allowed_failure:
        raise FirewallError(f"iptables {' '.join(words)}: {done.stderr.strip()}")
    return done.returncode == 0
