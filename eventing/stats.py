"""Per-dispatcher counters, latency and lag, and a Prometheus collector over them.

Lag is ``end offset - committed offset`` per partition. It is **approximate**: end
offsets come from the broker, and Tansu reports the base offset of the last record batch
plus one, so lag on the embedded broker can read low (even 0) while records wait.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DispatchStats", "EventingCollector", "StatsSnapshot"]

_COUNTERS = (
    "consumed",
    "delivered",
    "retried",
    "dead_lettered",
    "dropped",
    "filtered",
    "malformed",
    "replies",
    "restarts",
)


@dataclass(frozen=True)
class StatsSnapshot:
    """A copy of one dispatcher's figures. ``lag`` is approximate (see module docs)."""

    name: str
    kind: str
    topics: tuple[str, ...]
    group: str
    sink: str
    counters: dict[str, int]
    lag: dict[str, int]
    latency_ms: dict[str, float]
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "topics": list(self.topics),
            "group": self.group,
            "sink": self.sink,
            **self.counters,
            "lag_approximate": self.lag,
            "latency_ms": self.latency_ms,
            "last_error": self.last_error,
        }


@dataclass
class DispatchStats:
    """Thread-safe figures of one dispatcher (a source or a trigger)."""

    name: str
    kind: str
    topics: tuple[str, ...]
    group: str
    sink: str
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    lag: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    """Why the dispatcher last stopped on its own (it was restarted), if it ever did."""
    _latencies: deque[float] = field(default_factory=lambda: deque(maxlen=2048))
    _latency_sum: float = 0.0
    _latency_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self.counters[counter] += n

    def count(self, counter: str) -> int:
        """One counter, without the copies and the sorting of a snapshot (cheap to poll)."""
        with self._lock:
            return self.counters[counter]

    def observe_latency(self, seconds: float, n: int = 1) -> None:
        """Record the delivery latency (record timestamp to 2xx) of ``n`` events."""
        with self._lock:
            self._latencies.append(seconds)
            self._latency_sum += seconds * n
            self._latency_count += n

    def restarted(self, why: str) -> None:
        """Count a restart of the dispatcher, which had stopped because of ``why``."""
        with self._lock:
            self.counters["restarts"] += 1
            self.last_error = why

    def set_lag(self, lag: dict[str, int]) -> None:
        with self._lock:
            self.lag = dict(lag)

    def latency_totals(self) -> tuple[float, int]:
        with self._lock:
            return self._latency_sum, self._latency_count

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            lat = sorted(self._latencies)
            counters = dict(self.counters)
            lag = dict(self.lag)
            last_error = self.last_error
        pct: dict[str, float] = {}
        if lat:
            pct = {
                "p50": round(lat[len(lat) // 2] * 1000, 2),
                "p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
                "max": round(lat[-1] * 1000, 2),
            }
        return StatsSnapshot(
            self.name, self.kind, self.topics, self.group, self.sink, counters, lag, pct, last_error
        )


class EventingCollector:
    """A Prometheus collector reading live :class:`DispatchStats`; register it on a registry.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> registry = CollectorRegistry()
        >>> registry.register(EventingCollector(lambda: []))
    """

    def __init__(self, source: Callable[[], Iterable[DispatchStats]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["dispatcher", "kind"]
        families = {
            c: CounterMetricFamily(
                f"mlfn_eventing_{c}", f"events {c.replace('_', ' ')}", labels=labels
            )
            for c in _COUNTERS
        }
        lag = GaugeMetricFamily(
            "mlfn_eventing_lag_approximate",
            "records not yet committed per partition (approximate: from broker end offsets)",
            labels=[*labels, "partition"],
        )
        lat_sum = CounterMetricFamily(
            "mlfn_eventing_latency_seconds_sum", "delivery latency sum", labels=labels
        )
        lat_cnt = CounterMetricFamily(
            "mlfn_eventing_latency_seconds_count", "deliveries timed", labels=labels
        )
        for s in self._source():
            snap = s.snapshot()
            for c, fam in families.items():
                fam.add_metric([s.name, s.kind], snap.counters[c])
            for part, value in snap.lag.items():
                lag.add_metric([s.name, s.kind, part], value)
            total, count = s.latency_totals()
            lat_sum.add_metric([s.name, s.kind], total)
            lat_cnt.add_metric([s.name, s.kind], count)
        yield from families.values()
        yield lag
        yield lat_sum
        yield lat_cnt
