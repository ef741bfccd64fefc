"""Which worker nodes may take a pipeline's runs (pipeline.json `placement`, WORKER_LABELS;
its `executor`, which a node must be able to start), and, for a run that waits, why — in
plain words. No database here: callers pass the nodes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

Placement = Sequence[tuple[str, str]]


class NodeLike(Protocol):
    name: str
    labels: dict
    draining: bool
    # Its runs are placed by a cluster (the swarm executor): it takes runs of any placement,
    # which the cluster's own constraints then honour.
    placed_by_cluster: bool
    # The executors its runs can take (its own and those pipelines may choose that its
    # machine can start); empty: not told (a worker of an older Fast-Flow), any.
    executors: list


def fits(
    labels: Mapping[str, str],
    placement: Placement,
    executor: str = "",
    executors: Sequence[str] = (),
) -> bool:
    """Whether a node with `labels` that can start `executors` (none told: any) has every
    label the placement asks for, and can start the executor a pipeline chose ("" for the
    node's own)."""
    return all(labels.get(name) == value for name, value in placement) and (
        not executor or not executors or executor in executors
    )


def node_fits(node: NodeLike, placement: Placement, executor: str = "") -> bool:
    return node.placed_by_cluster or fits(node.labels, placement, executor, node.executors)


def describe(placement: Placement) -> str:
    return ", ".join(f"{name}={value}" for name, value in placement)


def taking(nodes: Iterable[NodeLike], placement: Placement, executor: str = "") -> list[NodeLike]:
    """The (live) nodes that would take a run with this placement (and executor) now."""
    return [node for node in nodes if not node.draining and node_fits(node, placement, executor)]


def why_waiting(nodes: Sequence[NodeLike], placement: Placement, executor: str = "") -> str:
    """Why no live node takes a run with this placement and executor ("" when one would).

    No live node at all is no reason here: the run waits for a worker as ever (the run
    page and `runpipeline` say that)."""
    if not nodes or taking(nodes, placement, executor):
        return ""
    names = ", ".join(node.name for node in nodes)
    if placement and not any(node_fits(node, placement) for node in nodes):
        return f"no live worker has the labels {describe(placement)} (live: {names})"
    fitting = [node.name for node in nodes if node_fits(node, placement, executor)]
    if not fitting:
        with_labels = f" with the labels {describe(placement)}" if placement else ""
        return f"no live worker{with_labels} can start {executor} runs (live: {names})"
    return f"every worker that could take it is draining ({', '.join(fitting)})"
