"""The event-driven pipeline as a graph, built from the function specs (pure, no I/O).

Nodes: Kafka topics, KafkaSources, functions, brokers, Triggers (with their filters),
dead-letter sinks, and the models of the model store. Edges: a topic feeds a source, a
source or trigger delivers to its function, a function replies to its broker (labelled
with the event types it ``emits``), a broker feeds its triggers, a model is loaded by the
inference functions that serve it and published by the function that retrains it.

Names are the ones the eventing plane and the Knative manifests use
(:func:`eventing.naming.source_name`, :func:`eventing.naming.trigger_name`,
:func:`eventing.broker.broker_topic`), so the picture matches ``mlfn status``.

Example:
    >>> from runtime.registry import discover
    >>> graph = pipeline_graph([f.spec for f in discover("functions")])  # doctest: +SKIP
    >>> print(to_mermaid(graph))                                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from eventing.broker import broker_topic
from eventing.naming import source_name, trigger_name
from runtime.spec import Delivery, FunctionSpec, Subscription

__all__ = [
    "FORMATS",
    "Edge",
    "Graph",
    "Node",
    "filter_text",
    "pipeline_graph",
    "render",
    "to_dot",
    "to_markdown",
    "to_mermaid",
]

NodeKind = Literal["topic", "source", "function", "broker", "trigger", "sink", "model"]
FORMATS = ("mermaid", "dot", "json", "markdown")


@dataclass(frozen=True)
class Node:
    """One box of the picture. ``group`` names an enclosing box (``store``: the model store)."""

    id: str
    kind: NodeKind
    label: str
    detail: str = ""
    group: str = ""


@dataclass(frozen=True)
class Edge:
    """An arrow; ``dashed`` for what is not an event delivery (models, dead letters)."""

    src: str
    dst: str
    label: str = ""
    dashed: bool = False


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    groups: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (what the console draws)."""
        return {
            "nodes": [asdict(n) for n in self.nodes],
            "edges": [asdict(e) for e in self.edges],
            "groups": dict(self.groups),
        }


def _condition(f: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for dialect, value in f.items():
        if dialect in ("exact", "prefix", "suffix") and isinstance(value, Mapping):
            op = {"exact": "=", "prefix": "starts with", "suffix": "ends with"}[dialect]
            parts.extend(f"{k} {op} {v}" for k, v in value.items())
        elif dialect in ("all", "any") and isinstance(value, list | tuple):
            inner = f" {'and' if dialect == 'all' else 'or'} ".join(_condition(x) for x in value)
            parts.append(f"({inner})")
        elif dialect == "not" and isinstance(value, Mapping):
            parts.append(f"not ({_condition(value)})")
        else:
            parts.append(f"{dialect} {json.dumps(value, sort_keys=True)}")
    return " and ".join(parts)


def filter_text(sub: Subscription) -> str:
    """A trigger's filter in words: ``type = mlfn.model.published and subject = digits``.

    ``attributes`` (the legacy filter) and ``filters`` (the new dialects) both count; no
    filter at all reads ``every event``.
    """
    parts = [f"{k} = {v}" for k, v in sub.attributes.items()]
    parts.extend(_condition(f) for f in sub.filters)
    return " and ".join(p for p in parts if p) or "every event"


class _Builder:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []

    def node(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def edge(self, src: str, dst: str, label: str = "", *, dashed: bool = False) -> None:
        edge = Edge(src, dst, label, dashed)
        if edge not in self.edges:
            self.edges.append(edge)

    def dead_letters(self, origin: str, delivery: Delivery) -> None:
        sink = delivery.dead_letter_sink
        if not sink:
            return
        if "://" in sink:
            target = self.node(Node(f"sink:{sink}", "sink", sink, "dead-letter sink"))
        else:
            target = self.node(Node(f"topic:{sink}", "topic", sink, "dead-letter topic"))
        self.edge(origin, target, f"dead letters after {delivery.retry} retries", dashed=True)


def _function_detail(spec: FunctionSpec) -> str:
    bits: list[str] = [spec.kind]
    if spec.model is not None:
        bits.append(f"serves {spec.model.name}")
    if spec.retrain is not None:
        bits.append(f"retrains {spec.retrain.model}")
    if spec.is_gpu:
        bits.append(f"{spec.resources.gpus} GPU")
    return ", ".join(bits)


_MODEL = "model (in the model store)"


def pipeline_graph(specs: Iterable[FunctionSpec], namespace: str = "default") -> Graph:
    """The pipeline that ``specs`` describe, as nodes and edges (pure)."""
    b = _Builder()
    specs = list(specs)
    for spec in specs:
        fn = b.node(Node(f"fn:{spec.name}", "function", spec.name, _function_detail(spec)))
        for i, src in enumerate(spec.sources):
            name = source_name(spec, i, src)
            source = b.node(Node(f"source:{name}", "source", name, "KafkaSource"))
            for topic in src.topics:
                b.edge(b.node(Node(f"topic:{topic}", "topic", topic, "Kafka topic")), source)
            b.edge(source, fn)
            b.dead_letters(source, src.delivery)
        for i, sub in enumerate(spec.subscriptions):
            name = trigger_name(spec, i, sub)
            broker = b.node(
                Node(
                    f"broker:{sub.broker}",
                    "broker",
                    f"broker {sub.broker}",
                    broker_topic(namespace, sub.broker),
                )
            )
            trigger = b.node(Node(f"trigger:{name}", "trigger", name, filter_text(sub)))
            b.edge(broker, trigger)
            b.edge(trigger, fn)
            b.dead_letters(trigger, sub.delivery)
        if spec.reply_to_broker and (spec.emits or spec.is_event):
            broker = b.node(
                Node(
                    f"broker:{spec.reply_to_broker}",
                    "broker",
                    f"broker {spec.reply_to_broker}",
                    broker_topic(namespace, spec.reply_to_broker),
                )
            )
            b.edge(fn, broker, ", ".join(spec.emits) or "replies")
        if spec.model is not None:
            model = b.node(
                Node(f"model:{spec.model.name}", "model", spec.model.name, _MODEL, "store")
            )
            b.edge(model, fn, "loads the latest version", dashed=True)
        if spec.retrain is not None:
            model = b.node(
                Node(f"model:{spec.retrain.model}", "model", spec.retrain.model, _MODEL, "store")
            )
            b.edge(fn, model, "publishes versions (gated)", dashed=True)
    groups = {"store": "model store"} if any(n.group for n in b.nodes.values()) else {}
    return Graph(tuple(b.nodes.values()), tuple(b.edges), groups)


# --- Mermaid ----------------------------------------------------------------------------
_MERMAID_SHAPES = {
    "topic": ('[("', '")]'),
    "source": ('>"', '"]'),
    "function": ('[["', '"]]'),
    "broker": ('{{"', '"}}'),
    "trigger": ('(["', '"])'),
    "sink": ('[/"', '"/]'),
    "model": ('[("', '")]'),
}


def _ids(graph: Graph) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in graph.nodes:
        base = re.sub(r"[^A-Za-z0-9_]", "_", n.id)
        candidate, k = base, 1
        while candidate in out.values():
            k += 1
            candidate = f"{base}_{k}"
        out[n.id] = candidate
    return out


def _mermaid_text(text: str) -> str:
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")


def _mermaid_node(n: Node, ident: str) -> str:
    start, end = _MERMAID_SHAPES[n.kind]
    text = _mermaid_text(n.label)
    if n.detail and n.kind in ("function", "trigger", "broker"):
        text += "<br/>" + _mermaid_text(n.detail)
    return f"{ident}{start}{text}{end}"


def to_mermaid(graph: Graph) -> str:
    """A Mermaid ``flowchart LR`` (GitHub renders it in Markdown)."""
    ids = _ids(graph)
    lines = ["flowchart LR"]
    for n in graph.nodes:
        if not n.group:
            lines.append("  " + _mermaid_node(n, ids[n.id]))
    for group, title in graph.groups.items():
        lines.append(f'  subgraph {group}["{_mermaid_text(title)}"]')
        lines.extend("    " + _mermaid_node(n, ids[n.id]) for n in graph.nodes if n.group == group)
        lines.append("  end")
    for e in graph.edges:
        a, z = ids[e.src], ids[e.dst]
        label = _mermaid_text(e.label)
        if label:
            arrow = f'-. "{label}" .->' if e.dashed else f'-- "{label}" -->'
        else:
            arrow = "-.->" if e.dashed else "-->"
        lines.append(f"  {a} {arrow} {z}")
    for kind, style in _MERMAID_CLASSES.items():
        members = [ids[n.id] for n in graph.nodes if n.kind == kind]
        if members:
            lines.append(f"  classDef {kind} {style}")
            lines.append(f"  class {','.join(members)} {kind}")
    return "\n".join(lines) + "\n"


_MERMAID_CLASSES = {
    "function": "fill:#dbeafe,stroke:#1d4ed8",
    "trigger": "fill:#fef3c7,stroke:#b45309",
    "broker": "fill:#ede9fe,stroke:#6d28d9",
    "model": "fill:#dcfce7,stroke:#15803d",
}

# --- DOT ----------------------------------------------------------------------------------
_DOT_SHAPES = {
    "topic": "cylinder",
    "source": "cds",
    "function": "box3d",
    "broker": "hexagon",
    "trigger": "box",
    "sink": "parallelogram",
    "model": "folder",
}


def _dot(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dot_node(n: Node) -> str:
    label = n.label + (f"\n{n.detail}" if n.detail else "")
    style = ', style="rounded"' if n.kind == "trigger" else ""
    return f"{_dot(n.id)} [label={_dot(label)}, shape={_DOT_SHAPES[n.kind]}{style}];"


def to_dot(graph: Graph) -> str:
    """Graphviz DOT (``mlfn graph --format dot | dot -Tsvg > pipeline.svg``)."""
    lines = ["digraph mlfn {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=11];']
    for n in graph.nodes:
        if not n.group:
            lines.append("  " + _dot_node(n))
    for group, title in graph.groups.items():
        lines.append(f"  subgraph cluster_{group} {{")
        lines.append(f"    label={_dot(title)}; style=dashed;")
        lines.extend("    " + _dot_node(n) for n in graph.nodes if n.group == group)
        lines.append("  }")
    for e in graph.edges:
        attrs = []
        if e.label:
            attrs.append(f"label={_dot(e.label)}")
        if e.dashed:
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {_dot(e.src)} -> {_dot(e.dst)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_markdown(graph: Graph, command: str = "make docs") -> str:
    """A Markdown page with the Mermaid graph and a legend (``docs/graph.md``)."""
    return (
        "# The pipeline as a graph\n\n"
        f"<!-- generated by `{command}`; do not edit by hand: "
        "tests/eventing/test_graph.py fails when this file is stale -->\n\n"
        "Built from the function specs by `eventing.graph.pipeline_graph` (the same names as "
        "`mlfn status` and the Knative manifests). Cylinders are Kafka topics, flags are "
        "KafkaSources, double boxes are functions, hexagons are brokers, rounded boxes are "
        "triggers with their filters; solid arrows carry events (labelled with the types a "
        "function emits), dashed ones are dead letters and model versions.\n\n"
        "```mermaid\n" + to_mermaid(graph) + "```\n"
    )


def render(graph: Graph, fmt: str) -> str:
    """``graph`` in one of :data:`FORMATS`.

    Raises:
        ValueError: an unknown format.
    """
    if fmt == "mermaid":
        return to_mermaid(graph)
    if fmt == "dot":
        return to_dot(graph)
    if fmt == "json":
        return json.dumps(graph.as_dict(), indent=2) + "\n"
    if fmt == "markdown":
        return to_markdown(graph)
    raise ValueError(f"unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}")
