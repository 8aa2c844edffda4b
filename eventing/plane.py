"""The eventing plane: every KafkaSource and Trigger of a set of functions, as dispatchers.

``mlfn dev`` builds one from the discovered functions, pointing each at the URL where
the platform serves that function:

    >>> plane = EventingPlane(settings, registry, sink_for=lambda fn: f"http://127.0.0.1:8080/{fn}",
    ...                       bootstrap=broker.bootstrap)    # doctest: +SKIP
    >>> plane.start(); plane.stats(); plane.stop()          # doctest: +SKIP

Naming follows Knative: a KafkaSource is named after its function (``<fn>``, or
``<fn>-<i>`` when a function has several) and its consumer group defaults to
``mlfn-<ns>-<source>``; a trigger ``<fn>-<broker>`` (``-<i>`` when several) reads the
broker topic ``knative-broker-<ns>-<broker>`` with the group ``knative-trigger-<ns>-<trigger>``.
Replies of a function go to the topic of its ``reply_to_broker``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventing._kafka import ensure_topics
from eventing.broker import broker_topic
from eventing.dispatcher import Dispatcher, DispatcherConfig
from eventing.filters import compile_trigger
from eventing.settings import EventingRoot
from eventing.stats import DispatchStats, EventingCollector
from runtime.registry import Registry
from runtime.spec import FunctionSpec

__all__ = ["EventingPlane", "plan"]

log = logging.getLogger(__name__)


def plan(
    specs: Iterable[FunctionSpec], settings: EventingRoot, sink_for: Callable[[str], str]
) -> list[DispatcherConfig]:
    """The dispatchers that the specs call for (pure; filters are compiled, so invalid ones raise).

    Raises:
        FilterError: a subscription's filter is not valid Knative dialect.
    """
    ns = settings.common.namespace
    out: list[DispatcherConfig] = []
    common: dict[str, Any] = {
        "namespace": ns,
        "max_in_flight": settings.eventing.max_in_flight,
        "max_record_bytes": settings.eventing.max_record_bytes,
        "workers": settings.eventing.dispatch_workers,
        "session_timeout_ms": settings.eventing.session_timeout_ms,
    }
    for spec in specs:
        reply = broker_topic(ns, spec.reply_to_broker) if spec.reply_to_broker else None
        for i, src in enumerate(spec.sources):
            name = src.name or (spec.name if len(spec.sources) == 1 else f"{spec.name}-{i}")
            out.append(
                DispatcherConfig(
                    name=name,
                    topics=src.topics,
                    group=src.consumer_group or f"mlfn-{ns}-{name}",
                    sink=sink_for(spec.name),
                    kind="source",
                    ordering=src.ordering,
                    delivery=src.delivery,
                    batch=src.batch,
                    initial_offset=src.initial_offset,
                    reply_topic=reply,
                    **common,
                )
            )
        for i, sub in enumerate(spec.subscriptions):
            name = sub.name or (
                f"{spec.name}-{sub.broker}" if len(spec.subscriptions) == 1 else f"{spec.name}-{i}"
            )
            out.append(
                DispatcherConfig(
                    name=name,
                    topics=(broker_topic(ns, sub.broker),),
                    group=f"knative-trigger-{ns}-{name}",
                    sink=sink_for(spec.name),
                    kind="trigger",
                    ordering="unordered",  # Knative triggers deliver unordered by default
                    delivery=sub.delivery,
                    batch=sub.batch,
                    filter=compile_trigger(sub.filters, sub.attributes, where=f"trigger {name}"),
                    reply_topic=reply,
                    **common,
                )
            )
    return out


class EventingPlane:
    """Runs a dispatcher for every source and trigger of ``functions``.

    Args:
        settings: mlfn settings (namespace, partitions, limits).
        functions: a discovered registry, or function specs.
        sink_for: the URL that serves a function, by function name.
        bootstrap: Kafka ``HOST:PORT``; default ``settings.eventing.bootstrap_servers``.
    """

    def __init__(
        self,
        settings: EventingRoot,
        functions: Registry | Iterable[FunctionSpec],
        sink_for: Callable[[str], str],
        *,
        bootstrap: str | None = None,
    ) -> None:
        specs = [f.spec for f in functions] if isinstance(functions, Registry) else list(functions)
        server = bootstrap or settings.eventing.bootstrap_servers
        if not server:
            raise ValueError(
                "the eventing plane needs a Kafka bootstrap address: start the embedded "
                "broker and pass bootstrap=, or set MLFN_BOOTSTRAP_SERVERS"
            )
        self.bootstrap: str = server
        self.settings = settings
        self.configs = plan(specs, settings, sink_for)
        self.dispatchers: list[Dispatcher] = []

    def topics(self) -> list[str]:
        """Every topic the plane reads or writes (created by :meth:`start`)."""
        names = {t for c in self.configs for t in c.topics}
        names |= {c.reply_topic for c in self.configs if c.reply_topic}
        names |= {
            c.delivery.dead_letter_sink
            for c in self.configs
            if c.delivery.dead_letter_sink and "://" not in c.delivery.dead_letter_sink
        }
        return sorted(names)

    def start(self, wait_assigned_s: float | None = None) -> None:
        """Create the topics, start every dispatcher; optionally wait for their partitions.

        Raises:
            KafkaUnavailableError: Kafka cannot be reached.
            TimeoutError: a dispatcher got no partitions within ``wait_assigned_s``.
        """
        ensure_topics(self.bootstrap, self.topics(), self.settings.eventing.partitions)
        self.dispatchers = [Dispatcher(c, self.bootstrap) for c in self.configs]
        with ThreadPoolExecutor(max(1, len(self.dispatchers))) as pool:
            list(pool.map(lambda d: d.start(), self.dispatchers))
        if wait_assigned_s is not None:
            late = [d.config.name for d in self.dispatchers if not d.wait_assigned(wait_assigned_s)]
            if late:
                raise TimeoutError(
                    f"dispatchers {', '.join(late)} got no partitions within {wait_assigned_s}s; "
                    "is another consumer in the same group holding them?"
                )
        log.info("eventing plane started", extra={"dispatchers": [c.name for c in self.configs]})

    def stop(self) -> None:
        """Stop every dispatcher (in parallel; each commits what it delivered)."""
        for d in self.dispatchers:
            d.request_stop()
        for d in self.dispatchers:
            d.stop()

    def stats(self) -> list[dict[str, Any]]:
        """Per source/trigger: counters, latency, and per-partition lag (approximate)."""
        return [d.stats.snapshot().as_dict() for d in self.dispatchers]

    def live_stats(self) -> list[DispatchStats]:
        return [d.stats for d in self.dispatchers]

    def collector(self) -> EventingCollector:
        """A Prometheus collector over this plane's figures (register it on a registry)."""
        return EventingCollector(self.live_stats)
