"""What runs may reach of the host (RUN_HOST_PORTS): the firewall's chain follows the setting,
and where the worker cannot write it, it says why — in its log and in `manage.py up`. (That
runs reach nothing else of the host is proven by runs: test_hostile.py.)"""

from __future__ import annotations

import subprocess
from io import StringIO

import pytest

from fastflow_site.management.commands.up import Command
from runs_app.executors import host_firewall, layout
from runs_app.executors.docker import DockerExecutor

# An interface no machine has: its INPUT rule matches nothing.
NOWHERE = "fftest-none0"


def chain() -> list[str]:
    shown = subprocess.run(
        ["iptables", "-S", host_firewall.CHAIN], capture_output=True, text=True, check=True
    )
    return shown.stdout.splitlines()[1:]


def test_the_hosts_chain_follows_run_host_ports(settings):
    require_root_firewall()
    session_ports = list(settings.RUN_HOST_PORTS)  # others' runs rely on these meanwhile
    try:
        settings.RUN_HOST_PORTS = [*session_ports, "5432"]
        host_firewall.guard(NOWHERE)
        ports = ",".join([*session_ports, "5432"])
        assert chain() == [
            f"-A {host_firewall.CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A {host_firewall.CHAIN} -p tcp -m multiport --dports {ports} -j ACCEPT",
            f"-A {host_firewall.CHAIN} -j REJECT --reject-with icmp-port-unreachable",
        ]
        assert host_firewall.iptables(
            "-C", "INPUT", "-i", NOWHERE, "-j", host_firewall.CHAIN, allowed_failure=True
        )
    finally:
        settings.RUN_HOST_PORTS = session_ports
        host_firewall.guard(NOWHERE)
        host_firewall.iptables("-D", "INPUT", "-i", NOWHERE, "-j", host_firewall.CHAIN)
        host_firewall._guarded.discard(NOWHERE)
    assert "5432" not in "\n".join(chain())


def require_root_firewall() -> None:
    problem = host_firewall.unguarded("lo")
    if problem:
        pytest.skip(problem)


def test_a_bridge_the_worker_cannot_see_is_said_so():
    assert "not in this worker's network namespace" in host_firewall.unguarded("br-0123456789ab")


@pytest.mark.usefixtures("docker_engine")
def test_up_says_when_runs_can_reach_the_hosts_services(settings, monkeypatch):
    settings.FASTFLOW_EXECUTOR = "docker"
    monkeypatch.setattr(
        host_firewall, "unguarded", lambda interface: "the worker is not root, so it cannot"
    )
    monkeypatch.setattr(layout, "_network_ready", set())
    monkeypatch.setattr(layout, "unguarded_networks", {})
    out = StringIO()
    Command(stdout=out).say_what_runs_reach(DockerExecutor())
    assert (
        "Runs can reach services listening on this machine's other addresses: the worker is "
        "not root, so it cannot" in out.getvalue()
    )


def test_ports_come_in_groups_a_multiport_match_takes():
    ports = [str(port) for port in range(1, 17)]
    assert [len(group) for group in host_firewall.port_groups(ports)] == [15, 1]
    ranges = [f"{port}:{port + 1}" for port in range(100, 120, 2)]
    assert [len(group) for group in host_firewall.port_groups(ranges)] == [7, 3]
    assert list(host_firewall.port_groups([])) == []
