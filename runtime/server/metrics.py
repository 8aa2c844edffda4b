"""Prometheus metrics of one served function, in a registry of its own.

Exposed on ``GET /metrics``: requests by function and status code, a latency histogram,
in-flight requests, batch sizes, the model version served, its quality, and the
cold-start phases (process start -> imports done -> model loaded -> ready), in seconds
since process start.

**Model quality** (``mlfn_model_quality{function, model, version, metric}``): the
holdout figures the model store keeps with the served version (``metadata["metrics"]``:
``accuracy``, ``f1``, ...: what the retraining loop measured on data the version never
saw). A canary's analysis checks the candidate revision's figure (Flagger's
``mlfn-model-quality`` MetricTemplate on a cluster, :mod:`localplatform.canary` locally),
so a version published by hand or by another pipeline, without the retraining gate, is
rolled back when it is worse than ``rollout.min_model_quality``.

With a ``revision`` (Knative's ``K_REVISION``), every series carries a ``revision`` label:
Flagger's queries select the canary revision by it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics", "process_start_time"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def process_start_time() -> float:
    """When this process started (wall clock), from /proc when available."""
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(0.0, age)
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    return time.time()


class Metrics:
    """The server's metrics; one instance per app, each with its own registry."""

    def __init__(
        self, function: str, started_at: float | None = None, *, revision: str | None = None
    ) -> None:
        self.function = function
        self.revision = revision
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        const = {"revision": revision} if revision else {}
        ident = [function, *const.values()]
        names = ["function", *const]
        self._ident = ident
        self.requests = Counter(
            "mlfn_requests", "Requests handled, by status code", [*names, "code"], registry=r
        )
        self.latency = Histogram(
            "mlfn_request_duration_seconds",
            "Request latency",
            names,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(*ident)
        self.in_flight = Gauge(
            "mlfn_requests_in_flight", "Requests being handled now", names, registry=r
        ).labels(*ident)
        self.shed = Counter(
            "mlfn_requests_shed",
            "Requests answered 503 at containerConcurrency: the queue was full (queue_full) "
            "or a queued request waited too long (queue_timeout)",
            [*names, "reason"],
            registry=r,
        )
        self.queued = Gauge(
            "mlfn_requests_queued",
            "Requests waiting for a slot (containerConcurrency), set at scrape time",
            ["function"],
            registry=r,
        ).labels(function)
        self.resting = Gauge(
            "mlfn_connections_resting",
            "Connections resting after a shed answer (for their Retry-After), at scrape time",
            ["function"],
            registry=r,
        ).labels(function)
        self.batch_size = Histogram(
            "mlfn_batch_size",
            "Items per call of the function",
            names,
            buckets=_BATCH_BUCKETS,
            registry=r,
        ).labels(*ident)
        self.model_version = Gauge(
            "mlfn_model_version", "Model version served", [*names, "model"], registry=r
        )
        self.model_quality = Gauge(
            "mlfn_model_quality",
            "Holdout figures of the model version served (from the model store's metadata)",
            [*names, "model", "version", "metric"],
            registry=r,
        )
        self.cold_start = Gauge(
            "mlfn_cold_start_seconds",
            "Seconds from process start to each start-up phase (imports_done, model_loaded, ready)",
            [*names, "phase"],
            registry=r,
        )
        self._start = started_at if started_at is not None else process_start_time()
        self._codes: dict[int, Counter] = {}

    def show_model(self, model: str, version: int, metadata: Mapping[str, Any]) -> None:
        """The version now served, and its quality figures (replacing the previous ones)."""
        self.model_version.labels(*self._ident, model).set(version)
        self.model_quality.clear()
        figures = metadata.get("metrics") if isinstance(metadata, Mapping) else None
        for name, value in (figures or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.model_quality.labels(*self._ident, model, str(version), str(name)).set(value)

    def phase(self, name: str, at: float | None = None) -> float:
        """Record that start-up phase ``name`` was reached (now, or at wall time ``at``)."""
        seconds = max(0.0, (at if at is not None else time.time()) - self._start)
        self.cold_start.labels(*self._ident, name).set(seconds)
        return seconds

    def count_shed(self, reason: str) -> None:
        """One request shed at the concurrency limit (``queue_full`` or ``queue_timeout``)."""
        self.shed.labels(*self._ident, reason).inc()

    def observe(self, status: int, seconds: float) -> None:
        counter = self._codes.get(status)
        if counter is None:
            counter = self._codes[status] = self.requests.labels(*self._ident, str(status))
        counter.inc()
        self.latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
