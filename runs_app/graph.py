"""The chain graph: which pipeline (or run) starts which, drawn as server-side SVG. A models
pipeline's model graph (runs_app.steps.model_graph) is drawn the same way.

The layering is networkx's: a layer per generation of the graph (an edge that closes a
cycle — a chain A → B → A — is drawn back up instead of taking part), and each node placed
under the mean position of the nodes that start it (the barycenter heuristic of layered
drawing), which keeps most edges straight and uncrossed. Nodes are
links; their colour and word show the last outcome; edges say when they fire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from pipelines_app.models import Pipeline
from runs_app.models import ChainLink, PipelineRun, RunStep, with_last_run

NODE_WIDTH, NODE_HEIGHT = 170, 40
LAYER_GAP, ROW_GAP = 110, 60
MARGIN = 20


@dataclass
class Node:
    key: str
    label: str
    url: str
    status: str = ""  # a run status, "" when never run
    x: float = 0.0
    y: float = 0.0


@dataclass
class Edge:
    source: str
    target: str
    label: str


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0


def trigger_label(trigger) -> str:
    """When a downstream trigger fires, in a few words."""
    parts = []
    if trigger.on_success:
        parts.append(f"route '{trigger.on_route}'" if trigger.on_route else "success")
    if trigger.on_failure:
        parts.append("failure")
    if trigger.run_config_id:
        parts.append(f"config {trigger.run_config_id}")
    return " · ".join(parts) or "never"


def pipelines_graph(around: Pipeline | None = None) -> Graph:
    """Every pipeline and its downstream triggers; with `around`, only its upstreams and
    downstreams (one step each way)."""
    pipelines = {p.name: p for p in with_last_run(Pipeline.objects.filter(state="present"))}
    edges = [
        Edge(source.name, trigger.pipeline, trigger_label(trigger))
        for source in pipelines.values()
        for trigger in source.spec.downstream_triggers
    ]
    if around is not None:
        edges = [e for e in edges if around.name in (e.source, e.target)]
        names = {around.name} | {e.source for e in edges} | {e.target for e in edges}
    else:
        names = set(pipelines) | {e.target for e in edges}
    graph = Graph()
    for name in sorted(names):
        pipeline = pipelines.get(name)
        graph.nodes[name] = Node(
            key=name,
            label=name if pipeline else f"{name} (missing)",
            url=pipeline.get_absolute_url() if pipeline else "",
            status=(pipeline.last_run_status or "") if pipeline else "missing",
        )
    graph.edges = edges
    return lay_out(graph)


def run_graph(run: PipelineRun, upstream: PipelineRun | None, links: list[ChainLink]) -> Graph:
    """A run, the run that started it, and the runs its end started (or skipped)."""
    graph = Graph()
    graph.nodes[run.short_id] = _run_node(run)
    if upstream is not None:
        graph.nodes[upstream.short_id] = _run_node(upstream)
        graph.edges.append(Edge(upstream.short_id, run.short_id, "started"))
    for link in links:
        if link.downstream is not None:
            graph.nodes[link.downstream.short_id] = _run_node(link.downstream)
            graph.edges.append(Edge(run.short_id, link.downstream.short_id, link.condition))
        else:
            key = f"skipped-{link.pk}"
            graph.nodes[key] = Node(key, f"{link.target_name} (skipped)", "", "skipped")
            graph.edges.append(Edge(run.short_id, key, link.condition))
    return lay_out(graph)


def _run_node(run: PipelineRun) -> Node:
    return Node(
        run.short_id, f"{run.pipeline.name} #{run.short_id}", run.get_absolute_url(), run.status
    )


def lay_out(graph: Graph) -> Graph:
    """Layers from the generations of the graph, ordered by barycenter.

    An edge that would close a cycle (a chain A → B → A) is left out of the layering and
    drawn as an arrow back up; every other edge points down to a later layer.
    """
    layering = nx.DiGraph()
    layering.add_nodes_from(sorted(graph.nodes))
    for edge in graph.edges:
        closes_a_cycle = edge.source == edge.target or (
            edge.target in layering and nx.has_path(layering, edge.target, edge.source)
        )
        if not closes_a_cycle:
            layering.add_edge(edge.source, edge.target)
    layers = [sorted(generation) for generation in nx.topological_generations(layering)]
    slot: dict[str, float] = {}
    for depth, names in enumerate(layers):
        if depth == 0:
            wanted = {name: float(index) for index, name in enumerate(names)}
        else:
            # Under the mean position of what starts it, as far as the layer leaves room.
            wanted = {
                name: sum(slot[p] for p in layering.predecessors(name))
                / max(1, layering.in_degree(name))
                for name in names
            }
        right = -1.0
        for name in sorted(names, key=lambda n: (wanted[n], n)):
            slot[name] = right = max(wanted[name], right + 1)
    for depth, names in enumerate(layers):
        for name in names:
            node = graph.nodes[name]
            node.x = MARGIN + slot[name] * (NODE_WIDTH + ROW_GAP)
            node.y = MARGIN + depth * (NODE_HEIGHT + LAYER_GAP)
    widest = max(slot.values(), default=0) + 1
    graph.width = MARGIN * 2 + widest * (NODE_WIDTH + ROW_GAP) + 40
    graph.height = MARGIN * 2 + len(layers) * (NODE_HEIGHT + LAYER_GAP)
    return graph


def render_svg(graph: Graph, label: str, empty: str = "No chains yet.") -> SafeString:
    """The graph as an inline SVG: links for nodes, labelled arrows for edges."""
    if not graph.nodes:
        return format_html('<p class="muted empty">{}</p>', empty)
    edges = format_html_join("", "{}", ((_edge(graph, edge),) for edge in graph.edges))
    nodes = format_html_join("", "{}", ((_node(node),) for node in graph.nodes.values()))
    return format_html(
        '<svg class="chain-graph" role="group" aria-label="{}" viewBox="0 0 {} {}" width="{}" '
        'height="{}"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>{}{}</svg>',
        label,
        round(graph.width),
        round(graph.height),
        round(graph.width),
        round(graph.height),
        edges,
        nodes,
    )


def _node(node: Node) -> SafeString:
    box = format_html(
        '<rect class="node run-{}" x="{}" y="{}" width="{}" height="{}" rx="6"/>'
        '<text x="{}" y="{}" class="node-label">{}</text>'
        '<text x="{}" y="{}" class="node-status">{}</text>',
        node.status or "never",
        round(node.x),
        round(node.y),
        NODE_WIDTH,
        NODE_HEIGHT,
        round(node.x + 8),
        round(node.y + 17),
        node.label[:26],
        round(node.x + 8),
        round(node.y + 33),
        _status_word(node.status),
    )
    if not node.url:
        return format_html('<g class="graph-node" data-node="{}">{}</g>', node.key, box)
    return format_html(
        '<a class="graph-node" data-node="{}" href="{}"><title>{}</title>{}</a>',
        node.key,
        node.url,
        node.label,
        box,
    )


def _edge(graph: Graph, edge: Edge) -> SafeString:
    source, target = graph.nodes[edge.source], graph.nodes[edge.target]
    if target.y > source.y:  # down to a later layer
        x1, y1 = source.x + NODE_WIDTH / 2, source.y + NODE_HEIGHT
        x2, y2 = target.x + NODE_WIDTH / 2, target.y
        middle = (y1 + y2) / 2
        path = (
            f"M {x1:.0f} {y1:.0f} C {x1:.0f} {middle:.0f} {x2:.0f} {middle:.0f} {x2:.0f} {y2:.0f}"
        )
        label_x, label_y, anchor = (x1 + x2) / 2 + 4, middle, "start"
    else:  # back up (it closes a loop): along the right side, through the gap
        x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT / 2
        x2, y2 = target.x + NODE_WIDTH, target.y + NODE_HEIGHT / 2
        bulge = max(x1, x2) + ROW_GAP / 2
        path = f"M {x1:.0f} {y1:.0f} C {bulge:.0f} {y1:.0f} {bulge:.0f} {y2:.0f} {x2:.0f} {y2:.0f}"
        label_x, label_y, anchor = x2 - 4, target.y + NODE_HEIGHT + 14, "end"
    return format_html(
        '<g class="graph-edge" data-edge="{} {}"><path d="{}" marker-end="url(#arrow)"/>'
        '<text x="{}" y="{}" text-anchor="{}" class="edge-label">{}</text></g>',
        edge.source,
        edge.target,
        path,
        round(label_x),
        round(label_y),
        anchor,
        edge.label,
    )


def _status_word(status: str) -> str:
    if status in PipelineRun.Status.values:
        return PipelineRun.Status(status).label
    if status in RunStep.Status.values:  # a model of a models pipeline
        return str(RunStep.Status(status).label)
    return {"": "never run", "missing": "no such pipeline", "skipped": "skipped"}.get(status, "")
