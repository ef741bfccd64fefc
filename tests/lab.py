"""A lab of worker nodes on one machine: Docker engines of their own, each in a network
namespace of its own, behind a bridge with outbound NAT — hosts as far apart as one machine
allows (ENVIRONMENT.md, "Several Docker engines"). Everything it starts it stops by pid, and
it removes its namespaces, links and firewall rules; the engines' data roots stay under
/var/lib/fastflow-lab so a later lab finds its images loaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "fflab0"
SUBNET = "10.231.0"
RUN_DIR = Path("/run/fastflow-lab")
DATA_ROOT = Path("/var/lib/fastflow-lab")
RULES = [
    # (table, chain, rule)
    ["nat", "POSTROUTING", "-s", f"{SUBNET}.0/24", "!", "-o", BRIDGE, "-j", "MASQUERADE"],
    ["filter", "DOCKER-USER", "-i", BRIDGE, "-j", "ACCEPT"],
    ["filter", "DOCKER-USER", "-o", BRIDGE, "-j", "ACCEPT"],
]


def sh(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, capture_output=True, text=True)


def available() -> str:
    """ "" when a lab can be made here, else why not."""
    if os.geteuid() != 0:
        return "root, to make network namespaces and start engines"
    for tool in ("ip", "iptables", "nsenter", "dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return ""


@dataclass
class Engine:
    name: str
    number: int
    process: subprocess.Popen | None = None

    @property
    def namespace(self) -> str:
        return f"fflab-{self.name}"

    @property
    def socket(self) -> str:
        return f"unix://{RUN_DIR}/{self.name}.sock"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{10 + self.number}"

    def docker(self, *args: str, **options) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "-H", self.socket, *args], **options)


class Lab:
    def __init__(self, names: list[str]) -> None:
        self.engines = [Engine(name, number) for number, name in enumerate(names, start=1)]

    def up(self, images: list[str]) -> None:
        self.down()  # what a lab that was killed left
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
        for table, chain, *rule in RULES:
            sh("iptables", "-t", table, "-I", chain, *rule)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        for engine in self.engines:
            self._namespace(engine)
            self._start(engine)
        for engine in self.engines:
            self._wait(engine)
            for image in images:
                self._load(engine, image)

    def _namespace(self, engine: Engine) -> None:
        host, inside = f"{engine.namespace}-h", f"{engine.namespace}-c"
        sh("ip", "netns", "add", engine.namespace)
        sh("ip", "link", "add", host, "type", "veth", "peer", "name", inside)
        sh("ip", "link", "set", host, "master", BRIDGE, "up")
        sh("ip", "link", "set", inside, "netns", engine.namespace)
        ns = ("ip", "-n", engine.namespace)
        sh(*ns, "link", "set", inside, "name", "eth0")
        sh(*ns, "addr", "add", f"{engine.address}/24", "dev", "eth0")
        sh(*ns, "link", "set", "eth0", "up")
        sh(*ns, "link", "set", "lo", "up")
        sh(*ns, "route", "add", "default", "via", f"{SUBNET}.1")

    def _start(self, engine: Engine) -> None:
        # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup mounts.
        log = open(RUN_DIR / f"{engine.name}.log", "w")  # noqa: SIM115
        engine.process = subprocess.Popen(
            [
                "nsenter", f"--net=/var/run/netns/{engine.namespace}",
                "dockerd",
                "--data-root", str(DATA_ROOT / engine.name),
                "--exec-root", str(RUN_DIR / f"{engine.name}.exec"),
                "--pidfile", str(RUN_DIR / f"{engine.name}.pid"),
                "-H", engine.socket,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def _wait(self, engine: Engine) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if engine.docker("info", capture_output=True).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"the lab's engine {engine.name} did not start")

    def _load(self, engine: Engine, image: str) -> None:
        wanted = sh("docker", "image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
        found = engine.docker(
            "image", "inspect", "--format", "{{.Id}}", image, capture_output=True, text=True
        ).stdout.strip()
        if found == wanted:
            return
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        engine.docker("load", "-q", stdin=save.stdout, check=True, capture_output=True)
        save.wait()

    def down(self) -> None:
        """Stop every engine the lab started (by pid) and remove what it made."""
        for engine in self.engines:
            pid_file = RUN_DIR / f"{engine.name}.pid"
            pid = None
            with contextlib.suppress(FileNotFoundError, ValueError):
                pid = int(pid_file.read_text())
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.2)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if engine.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    engine.process.wait(timeout=10)
            sh("ip", "link", "del", f"{engine.namespace}-h", check=False)
            sh("ip", "netns", "del", engine.namespace, check=False)
        for table, chain, *rule in RULES:
            while sh("iptables", "-t", table, "-D", chain, *rule, check=False).returncode == 0:
                pass
        sh("ip", "link", "del", BRIDGE, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True
