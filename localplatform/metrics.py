"""Prometheus metrics of the local platform, served on ``/_mlfn/metrics`` by the gateway.

Cold starts per phase (Knative has no cold-start metric: serving#13459), crashes, and,
read at scrape time, instances, in-flight requests, desired scale, traffic and pinned
model version per revision.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from localplatform.serving import Serving

__all__ = ["PlatformMetrics"]

_COLD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class _RevisionCollector:
    def __init__(self, serving: Serving) -> None:
        self.serving = serving

    def collect(self) -> Iterator[Any]:
        labels = ["function", "revision"]
        instances = GaugeMetricFamily(
            "mlfn_platform_instances", "Instances by state", labels=[*labels, "state"]
        )
        in_flight = GaugeMetricFamily(
            "mlfn_platform_in_flight", "Requests in flight or held (activator)", labels=labels
        )
        desired = GaugeMetricFamily(
            "mlfn_platform_desired_scale", "Autoscaler decision", labels=labels
        )
        traffic = GaugeMetricFamily("mlfn_platform_traffic_percent", "Traffic split", labels=labels)
        model = GaugeMetricFamily(
            "mlfn_platform_revision_model_version",
            "Model version the revision's instances are pinned to",
            labels=labels,
        )
        for fn in self.serving.functions.values():
            for rev in fn.revisions.values():
                key = [fn.name, rev.name]
                counts = {"starting": 0, "ready": 0, "terminating": 0}
                for inst in rev.instances.values():
                    if inst.state in counts:
                        counts[inst.state] += 1
                for state, n in counts.items():
                    instances.add_metric([*key, state], n)
                in_flight.add_metric(key, rev.in_flight)
                desired.add_metric(key, rev.desired)
                traffic.add_metric(key, fn.traffic.percent.get(rev.name, 0))
                if rev.model is not None:
                    model.add_metric(key, rev.model)
        yield from (instances, in_flight, desired, traffic, model)


class PlatformMetrics:
    """The platform's registry: cold-start histogram, crash counter, revision gauges."""

    def __init__(self, serving: Serving) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.cold_start = Histogram(
            "mlfn_platform_cold_start_seconds",
            "Instance start, from the scale decision to ready, by phase "
            "(spawn, imports, model_load, ready, total)",
            ["function", "phase"],
            buckets=_COLD_BUCKETS,
            registry=self.registry,
        )
        self.crashes = Counter(
            "mlfn_platform_instance_failures",
            "Instances that exited without being asked to",
            ["function"],
            registry=self.registry,
        )
        self.registry.register(_RevisionCollector(serving))

    def observe_cold_start(self, function: str, total: float, phases: dict[str, float]) -> None:
        for phase, seconds in phases.items():
            self.cold_start.labels(function, phase).observe(seconds)
        self.cold_start.labels(function, "total").observe(total)

    def render(self) -> bytes:
        return generate_latest(self.registry)
