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

RUN_DIR = Path("/run/fastflow-lab")
DATA_ROOT = Path("/var/lib/fastflow-lab")


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
    node_id: str = ""  # in a Swarm

    @property
    def namespace(self) -> str:
        return f"fflab-{self.name}"

    @property
    def socket(self) -> str:
        return f"unix://{RUN_DIR}/{self.name}.sock"

    subnet: str = "10.231.0"

    @property
    def address(self) -> str:
        return f"{self.subnet}.{10 + self.number}"

    def docker(self, *args: str, **options) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "-H", self.socket, *args], **options)


class Lab:
    """Engines named `names` behind the bridge `bridge` on `subnet`.0/24 (labs that may run
    at the same time, in two test processes, need their own names, bridge and subnet)."""

    def __init__(
        self,
        names: list[str],
        engine_options: tuple[str, ...] = (),
        bridge: str = "fflab0",
        subnet: str = "10.231.0",
    ) -> None:
        self.engines = [
            Engine(name, number, subnet=subnet) for number, name in enumerate(names, start=1)
        ]
        self.engine_options = engine_options  # for every engine's dockerd
        self.bridge, self.subnet = bridge, subnet
        self.rules = [  # (table, chain, rule)
            ["nat", "POSTROUTING", "-s", f"{subnet}.0/24", "!", "-o", bridge, "-j", "MASQUERADE"],
            ["filter", "DOCKER-USER", "-i", bridge, "-j", "ACCEPT"],
            ["filter", "DOCKER-USER", "-o", bridge, "-j", "ACCEPT"],
        ]

    def up(self, images: list[str]) -> None:
        self.down()  # what a lab that was killed left
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
        for table, chain, *rule in self.rules:
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
        sh("ip", "link", "set", host, "master", self.bridge, "up")
        sh("ip", "link", "set", inside, "netns", engine.namespace)
        ns = ("ip", "-n", engine.namespace)
        sh(*ns, "link", "set", inside, "name", "eth0")
        sh(*ns, "addr", "add", f"{engine.address}/24", "dev", "eth0")
        sh(*ns, "link", "set", "eth0", "up")
        sh(*ns, "link", "set", "lo", "up")
        sh(*ns, "route", "add", "default", "via", f"{self.subnet}.1")

    def _start(
        self, engine: Engine, fresh: bool = True, options: tuple[str, ...] | None = None
    ) -> None:
        if fresh:  # a Swarm the engine was in before (a lab that was killed) is not joined
            shutil.rmtree(DATA_ROOT / engine.name / "swarm", ignore_errors=True)
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
                *(self.engine_options if options is None else options),
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

    def stop(self, engine: Engine) -> None:
        """Stop one engine (SIGTERM by its pid, SIGKILL after 30 s): its containers stop."""
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
            engine.process = None

    def start(self, engine: Engine, options: tuple[str, ...] | None = None) -> None:
        """Start a stopped engine again, as it was (a Swarm node rejoins its Swarm), with
        other dockerd `options` if given."""
        self._start(engine, fresh=False, options=options)
        self._wait(engine)

    def swarm(self) -> None:
        """Join the engines in one Swarm: the first is its manager, the others workers,
        each labelled `node=<its name>` (what placement constraints name)."""
        manager, *workers = self.engines
        manager.docker("swarm", "leave", "--force", capture_output=True)
        manager.docker(
            "swarm", "init", "--advertise-addr", manager.address,
            "--listen-addr", f"{manager.address}:2377",
            check=True, capture_output=True,
        )  # fmt: skip
        token = manager.docker(
            "swarm", "join-token", "-q", "worker", check=True, capture_output=True, text=True
        ).stdout.strip()
        for engine in workers:
            engine.docker("swarm", "leave", "--force", capture_output=True)
            engine.docker(
                "swarm", "join", "--token", token, "--advertise-addr", engine.address,
                f"{manager.address}:2377", check=True, capture_output=True,
            )  # fmt: skip
        # Nodes that stop are noticed in a few seconds, not 15 (tests stop one mid-run).
        manager.docker("swarm", "update", "--dispatcher-heartbeat", "1s", capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = manager.docker(
                "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ID}}",
                capture_output=True, text=True,
            ).stdout.split("\n")  # fmt: skip
            ready = [line.split() for line in listed if " Ready " in f"{line} "]
            if len(ready) == len(self.engines):
                break
            time.sleep(0.3)
        else:
            raise RuntimeError("the lab's engines did not all join the Swarm")
        # Every node answers to its lab name (hostnames are the machine's, the same for all).
        for engine in self.engines:
            node_id = engine.docker(
                "info", "--format", "{{.Swarm.NodeID}}", capture_output=True, text=True
            ).stdout.strip()
            manager.docker(
                "node", "update", "--label-add", f"node={engine.name}", node_id,
                check=True, capture_output=True,
            )  # fmt: skip
            engine.node_id = node_id

    def down(self) -> None:
        """Stop every engine the lab started (by pid) and remove what it made."""
        for engine in self.engines:
            self.stop(engine)
            sh("ip", "link", "del", f"{engine.namespace}-h", check=False)
            sh("ip", "netns", "del", engine.namespace, check=False)
        for table, chain, *rule in self.rules:
            while sh("iptables", "-t", table, "-D", chain, *rule, check=False).returncode == 0:
                pass
        sh("ip", "link", "del", self.bridge, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True
