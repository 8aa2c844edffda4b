"""``mlfn graph``: the pipeline built from the specs, in Mermaid, DOT and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventing.graph import filter_text, pipeline_graph, render, to_dot, to_markdown, to_mermaid
from runtime.spec import FunctionSpec, Subscription

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _example() -> list[FunctionSpec]:
    from runtime.registry import discover

    return [fn.spec for fn in discover("functions")]


def _edges(specs: list[FunctionSpec]) -> set[tuple[str, str, str]]:
    return {(e.src, e.dst, e.label) for e in pipeline_graph(specs).edges}


def test_the_example_pipeline_end_to_end() -> None:
    edges = _edges(_example())
    assert ("topic:digits.raw", "source:preprocess", "") in edges
    assert ("source:preprocess", "fn:preprocess", "") in edges
    assert ("fn:preprocess", "broker:default", "mlfn.digits.features") in edges
    assert ("broker:default", "trigger:retrain-features", "") in edges
    assert ("trigger:retrain-features", "fn:retrain", "") in edges
    assert ("fn:retrain", "broker:default", "mlfn.model.published, mlfn.model.rejected") in edges
    assert ("fn:retrain", "model:digits", "publishes versions (gated)") in edges
    assert ("model:digits", "fn:predict", "loads the latest version") in edges
    assert ("trigger:predict-model-updates", "fn:predict", "") in edges
    assert ("source:preprocess", "topic:digits.dlq", "dead letters after 2 retries") in edges


def test_triggers_carry_their_filters_and_the_broker_its_topic() -> None:
    nodes = {n.id: n for n in pipeline_graph(_example(), "ml").nodes}
    assert nodes["trigger:predict-model-updates"].detail == (
        "type = mlfn.model.published and subject = digits"
    )
    assert nodes["trigger:retrain-features"].detail == "type = mlfn.digits.features"
    assert nodes["broker:default"].detail == "knative-broker-ml-default"
    assert nodes["model:digits"].group == "store"


def test_filter_text_reads_every_dialect() -> None:
    sub = Subscription(
        filters=(
            {"prefix": {"type": "mlfn."}},
            {"any": [{"exact": {"subject": "a"}}, {"suffix": {"source": "/b"}}]},
            {"not": {"exact": {"type": "x"}}},
        )
    )
    assert filter_text(sub) == (
        "type starts with mlfn. and (subject = a or source ends with /b) and not (type = x)"
    )
    assert filter_text(Subscription()) == "every event"


def test_names_follow_the_eventing_plane() -> None:
    """Two sources of one function are ``<fn>-0`` and ``<fn>-1``, as the dispatchers are."""
    spec = FunctionSpec(
        name="join",
        kind="event",
        module="m",
        entrypoint="join",
        sources=({"topics": ("a",)}, {"topics": ("b",)}),
    )
    edges = _edges([spec])
    assert ("topic:a", "source:join-0", "") in edges
    assert ("topic:b", "source:join-1", "") in edges
    assert ("fn:join", "broker:default", "replies") in edges


def test_mermaid_and_dot_are_well_formed() -> None:
    graph = pipeline_graph(_example())
    mermaid = to_mermaid(graph)
    assert mermaid.startswith("flowchart LR\n")
    assert 'subgraph store["model store"]' in mermaid
    assert 'fn_preprocess -- "mlfn.digits.features" --> broker_default' in mermaid
    dot = to_dot(graph)
    assert dot.startswith("digraph mlfn {") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    assert '"fn:preprocess" -> "broker:default" [label="mlfn.digits.features"];' in dot
    data = json.loads(render(graph, "json"))
    assert {n["id"] for n in data["nodes"]} >= {"fn:predict", "fn:retrain", "model:digits"}
    with pytest.raises(ValueError, match="mermaid, dot, json, markdown"):
        render(graph, "svg")


def test_docs_graph_md_is_up_to_date() -> None:
    """docs/graph.md is generated (``make docs``): this fails when the specs changed since."""
    expected = to_markdown(pipeline_graph(_example()))
    path = REPO / "docs" / "graph.md"
    assert path.read_text(encoding="utf-8") == expected, "docs/graph.md is stale: run `make docs`"


def test_the_command_prints_and_writes(tmp_path: Path) -> None:
    from mlfn.cli import root

    runner = CliRunner()
    printed = runner.invoke(root, ["graph", "--format", "dot"], env={"MLFN_NAMESPACE": "ml"})
    assert printed.exit_code == 0, printed.output
    assert "knative-broker-ml-default" in printed.output
    out = tmp_path / "graph.md"
    written = runner.invoke(root, ["graph", "--format", "markdown", "-o", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text().startswith("# The pipeline as a graph")
    missing = runner.invoke(root, ["graph"], env={"MLFN_FUNCTIONS_PACKAGE": "no_such_pkg"})
    assert missing.exit_code == 1 and "no such module" in missing.output
