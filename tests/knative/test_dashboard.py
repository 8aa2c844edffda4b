"""The Grafana dashboard (knative/dashboards/mlfn.json) queries only metrics mlfn exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

pytestmark = pytest.mark.unit

DASHBOARD = Path(__file__).resolve().parents[2] / "knative" / "dashboards" / "mlfn.json"
_SUFFIXES = {
    "counter": ("", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def _registries() -> list[CollectorRegistry]:
    """Every registry and collector mlfn's code defines, as its processes build them."""
    from eventing.stats import DispatchStats, EventingCollector
    from localplatform.metrics import PlatformMetrics
    from runtime.retraining.progress import TrainingMetrics
    from runtime.server.metrics import Metrics

    training = CollectorRegistry()
    TrainingMetrics(training)
    eventing = CollectorRegistry()
    eventing.register(
        EventingCollector(lambda: [DispatchStats("probe", "source", ("t",), "g", "sink")])
    )
    platform = PlatformMetrics(SimpleNamespace(functions={}))  # type: ignore[arg-type]
    return [Metrics("probe").registry, training, eventing, platform.registry]


def exported_names() -> set[str]:
    """The sample names the registries expose, read from their ``# TYPE`` lines."""
    names: set[str] = set()
    for registry in _registries():
        text = generate_latest(registry).decode()
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(
                name if suffix == "" else base + suffix for suffix in _SUFFIXES.get(kind, ("",))
            )
    return names


def _panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _queried(panels: list[dict[str, Any]]) -> set[str]:
    return {
        name
        for p in panels
        for t in p["targets"]
        for name in re.findall(r"\bmlfn_[a-z_]+\b", t["expr"])
    }


def test_the_registries_are_read_not_listed() -> None:
    names = exported_names()
    assert "mlfn_requests_total" in names and "mlfn_request_duration_seconds_bucket" in names
    assert "mlfn_eventing_dead_lettered_total" in names
    assert "mlfn_platform_traffic_percent" in names
    assert "mlfn_model_holdout_accuracy" in names
    assert "mlfn_no_such_metric" not in names


def test_every_query_names_a_metric_mlfn_exports() -> None:
    unknown = sorted(_queried(_panels()) - exported_names())
    assert unknown == [], f"the dashboard queries metrics nothing exports: {unknown}"


def test_every_panel_queries_mlfn_through_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in _panels():
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all("mlfn_" in t["expr"] for t in p["targets"]), p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]


def test_it_shows_what_the_console_shows() -> None:
    """Served, errors, instances, cold starts, model versions and accuracy, gate decisions,
    delivered / retried / dead-lettered / lag, traffic split."""
    queried = _queried(_panels())
    for metric in (
        "mlfn_requests_total",
        "mlfn_requests_in_flight",
        "mlfn_cold_start_seconds",
        "mlfn_model_version",
        "mlfn_model_latest_version",
        "mlfn_model_holdout_accuracy",
        "mlfn_model_decisions_total",
        "mlfn_eventing_delivered_total",
        "mlfn_eventing_retried_total",
        "mlfn_eventing_dead_lettered_total",
        "mlfn_eventing_lag_approximate",
        "mlfn_platform_traffic_percent",
        "mlfn_platform_instances",
    ):
        assert metric in queried, metric
