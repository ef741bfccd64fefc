"""The chain graph: which pipeline (or run) starts which. A models pipeline's model graph
(runs_app.steps.model_graph) is drawn the same way.

The server writes the graph's parts as SVG — nodes are links whose colour and word show the
last outcome, edges say when they fire — and static/js/graph.js places them: dagre (vendored,
static/vendor/dagre) lays the graph out in layers with few crossings, cycles included, and
the page can be zoomed and moved, so a graph of hundreds of nodes stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.templatetags.static import static
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from pipelines_app.models import Pipeline
from runs_app.models import ChainLink, PipelineRun, RunStep, with_last_run

NODE_WIDTH, NODE_HEIGHT = 170, 40  # graph.js reads them from the node's rectangle


@dataclass
class Node:
    key: str
    label: str
    url: str
    status: str = ""  # a run status, "" when never run


@dataclass
class Edge:
    source: str
    target: str
    label: str


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)


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
    return graph


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
    return graph


def _run_node(run: PipelineRun) -> Node:
    return Node(
        run.short_id, f"{run.pipeline.name} #{run.short_id}", run.get_absolute_url(), run.status
    )


def render_svg(graph: Graph, label: str, empty: str = "No chains yet.") -> SafeString:
    """The graph's parts as an inline SVG for graph.js to place: links for nodes, labelled
    arrows for edges, and the zoom buttons."""
    if not graph.nodes:
        return format_html('<p class="muted empty">{}</p>', empty)
    edges = format_html_join(
        "",
        '<g class="graph-edge" data-edge="{} {}" data-source="{}" data-target="{}">'
        '<path marker-end="url(#arrow)"/><text class="edge-label">{}</text></g>',
        ((edge.source, edge.target, edge.source, edge.target, edge.label) for edge in graph.edges),
    )
    nodes = format_html_join("", "{}", ((_node(node),) for node in graph.nodes.values()))
    return format_html(
        '<figure class="graph" data-graph data-layout-script="{}">'
        '<div class="graph-tools" role="toolbar" aria-label="Zoom {}">'
        '<button type="button" class="button secondary" data-zoom="in" aria-label="Zoom in">'
        "+</button>"
        '<button type="button" class="button secondary" data-zoom="out" aria-label="Zoom out">'
        "&minus;</button>"
        '<button type="button" class="button secondary" data-zoom="fit">Fit</button>'
        '<span class="muted small">drag to move · Ctrl + wheel to zoom</span></div>'
        '<svg class="chain-graph" role="group" aria-label="{}" tabindex="0" '
        'viewBox="0 0 {} {}" width="100%" height="{}">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>'
        '<g class="graph-viewport">{}{}</g></svg></figure>',
        static("vendor/dagre/dagre.min.js"),
        label,
        label,
        NODE_WIDTH,
        NODE_HEIGHT,
        NODE_HEIGHT,
        edges,
        nodes,
    )


def _node(node: Node) -> SafeString:
    box = format_html(
        '<rect class="node run-{}" width="{}" height="{}" rx="6"/>'
        '<text x="8" y="17" class="node-label">{}</text>'
        '<text x="8" y="33" class="node-status">{}</text>',
        node.status or "never",
        NODE_WIDTH,
        NODE_HEIGHT,
        node.label[:26],
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


def _status_word(status: str) -> str:
    if status in PipelineRun.Status.values:
        return PipelineRun.Status(status).label
    if status in RunStep.Status.values:  # a model of a models pipeline
        return str(RunStep.Status(status).label)
    return {"": "never run", "missing": "no such pipeline", "skipped": "skipped"}.get(status, "")
