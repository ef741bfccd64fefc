"""The Docker engine's own ceiling, without Fast-Flow: how fast it creates, starts, waits
for and removes containers shaped like a run's (locked down, on the run network), one at a
time and several at once — the floor under any per-run-container throughput.

    uv run python bench/engine_ceiling.py [--containers 24] [--image fastflow-worker:latest]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import percentiles

NETWORK = "fastflow-bench-ceiling"


def churn(api: docker.APIClient, image: str, count: int, parallel: int) -> None:
    host = api.create_host_config(
        init=True, read_only=True, tmpfs={"/tmp": "size=64m"}, cap_drop=["ALL"],  # noqa: S108
        security_opt=["no-new-privileges:true"], network_mode=NETWORK, pids_limit=512,
        mem_limit=4 * 1024**3, memswap_limit=4 * 1024**3, nano_cpus=2 * 10**9,
    )  # fmt: skip
    phases: dict[str, list[float]] = {"create": [], "start": [], "run": [], "remove": []}
    lock = threading.Lock()

    def one() -> None:
        began = time.perf_counter()
        made = api.create_container(
            image, command=["python3", "-c", "print(55)"], user="10001:10001", host_config=host
        )["Id"]
        created = time.perf_counter()
        api.start(made)
        started = time.perf_counter()
        api.wait(made)
        ended = time.perf_counter()
        api.remove_container(made, force=True)
        removed = time.perf_counter()
        with lock:
            for phase, span in zip(
                phases,
                (created - began, started - created, ended - started, removed - ended),
                strict=True,
            ):
                phases[phase].append(span)  # fmt: skip

    def loop(times: int) -> None:
        for _ in range(times):
            one()

    began = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(count // parallel,)) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = time.perf_counter() - began
    done = count // parallel * parallel
    print(f"  {parallel} at once: {done} containers in {total:.1f} s ({done / total:.1f}/s)")
    for phase, samples in phases.items():
        p50, p95, _ = percentiles(samples)
        print(f"      {phase:<7} p50 {p50 * 1000:5.0f} ms   p95 {p95 * 1000:5.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=24)
    parser.add_argument("--image", default="fastflow-worker:latest")
    args = parser.parse_args()
    api = docker.from_env().api
    if not api.networks(names=[NETWORK]):
        api.create_network(NETWORK, options={"com.docker.network.bridge.enable_icc": "false"})
    try:
        for parallel in (1, 2, 4):
            churn(api, args.image, args.containers, parallel)
    finally:
        for network in api.networks(names=[NETWORK]):
            api.remove_network(network["Id"])


if __name__ == "__main__":
    main()
