"""The eventing plane: every KafkaSource and Trigger of a set of functions, as dispatchers.

``mlfn dev`` builds one from the discovered functions, pointing each at the URL where
the platform serves that function:

    >>> plane = EventingPlane(settings, registry, sink_for=lambda fn: f"http://127.0.0.1:8080/{fn}",
    ...                       bootstrap=broker.bootstrap)    # doctest: +SKIP
    >>> plane.start(); plane.stats(); plane.stop()          # doctest: +SKIP

Names, consumer groups and the ``mlfnsource`` extension come from :mod:`eventing.naming`,
which the rendered Knative objects use too; a trigger reads the broker topic
``knative-broker-<ns>-<broker>``. Replies of a function go to the topic of its
``reply_to_broker``.

Supervision: a dispatcher that stops without being asked (Kafka went away, a bug) is
restarted with exponential backoff (0.5 s doubling to 30 s, reset after a minute of
health); the log says why it stopped and when it restarts, and its stats count
``restarts`` and keep ``last_error`` (``mlfn status`` shows both). The restarted one reads
from the committed offsets, so nothing is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from eventing._kafka import ensure_topics
from eventing.broker import broker_topic
from eventing.dispatcher import Dispatcher, DispatcherConfig
from eventing.errors import EventingError
from eventing.filters import compile_trigger
from eventing.naming import (
    SOURCE_EXTENSION,
    source_group,
    source_name,
    trigger_group,
    trigger_name,
)
from eventing.settings import EventingRoot
from eventing.stats import DispatchStats, EventingCollector
from runtime.registry import Registry
from runtime.spec import FunctionSpec

__all__ = ["EventingPlane", "StopReport", "plan"]

log = logging.getLogger(__name__)


def plan(
    specs: Iterable[FunctionSpec],
    settings: EventingRoot,
    sink_for: Callable[[str], str],
    *,
    epoch: str | None = None,
) -> list[DispatcherConfig]:
    """The dispatchers that the specs call for (pure; filters are compiled, so invalid ones raise).

    ``epoch``: the broker's epoch when its log does not outlive it (the embedded broker);
    it makes the ids of wrapped records unique across broker restarts (:mod:`eventing.records`).

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
        "fetch_wait_ms": settings.eventing.fetch_wait_ms,
        "idle_fetch_wait_ms": settings.eventing.idle_fetch_wait_ms,
        "epoch": epoch,
    }
    for spec in specs:
        reply = broker_topic(ns, spec.reply_to_broker) if spec.reply_to_broker else None
        for i, src in enumerate(spec.sources):
            name = source_name(spec, i, src)
            out.append(
                DispatcherConfig(
                    name=name,
                    topics=src.topics,
                    group=source_group(ns, name, src),
                    extensions=((SOURCE_EXTENSION, name),),
                    sink=sink_for(spec.name),
                    kind="source",
                    ordering=src.ordering,
                    delivery=src.delivery,
                    batch=src.batch,
                    initial_offset=src.initial_offset,
                    key_type=src.key_type,
                    reply_topic=reply,
                    **common,
                )
            )
        for i, sub in enumerate(spec.subscriptions):
            name = trigger_name(spec, i, sub)
            out.append(
                DispatcherConfig(
                    name=name,
                    topics=(broker_topic(ns, sub.broker),),
                    group=trigger_group(ns, name),
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


RESTART_BACKOFF_S = (0.5, 30.0)
"""First and longest wait before restarting a dispatcher that stopped on its own."""
HEALTHY_S = 60.0
"""A dispatcher that ran this long since its last restart starts the backoff afresh."""


@dataclass(frozen=True)
class StopReport:
    """What a clean stop left: per dispatcher, records taken and not finished, and late ones."""

    unfinished: dict[str, int]
    late: list[str]

    def describe(self) -> str:
        left = sum(self.unfinished.values())
        text = f"{left} record(s) read and not yet delivered (read again on the next start)"
        if self.late:
            text += f"; did not stop in time: {', '.join(self.late)}"
        return text


class _Slot:
    """One configured dispatcher and its restarts."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.started_at = time.monotonic()
        self.delay = RESTART_BACKOFF_S[0]
        self.restart_at: float | None = None


class EventingPlane:
    """Runs a dispatcher for every source and trigger of ``functions``, restarting any that stops.

    Args:
        settings: mlfn settings (namespace, partitions, limits).
        functions: a discovered registry, or function specs.
        sink_for: the URL that serves a function, by function name.
        bootstrap: Kafka ``HOST:PORT``; default ``settings.eventing.bootstrap_servers``.
        epoch: the broker's epoch when its log does not outlive it (see :func:`plan`).
    """

    def __init__(
        self,
        settings: EventingRoot,
        functions: Registry | Iterable[FunctionSpec],
        sink_for: Callable[[str], str],
        *,
        bootstrap: str | None = None,
        epoch: str | None = None,
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
        self.configs = plan(specs, settings, sink_for, epoch=epoch)
        self._slots: list[_Slot] = []
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def dispatchers(self) -> list[Dispatcher]:
        """The dispatchers running now (a restarted one replaces the one that stopped)."""
        return [s.dispatcher for s in self._slots]

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
        dispatchers = [Dispatcher(c, self.bootstrap) for c in self.configs]
        with ThreadPoolExecutor(max(1, len(dispatchers))) as pool:
            list(pool.map(lambda d: d.start(), dispatchers))
        self._slots = [_Slot(d) for d in dispatchers]
        self._stopping.clear()
        self._supervisor = threading.Thread(
            target=self._supervise, name="eventing-supervisor", daemon=True
        )
        self._supervisor.start()
        if wait_assigned_s is not None:
            late = [d.config.name for d in self.dispatchers if not d.wait_assigned(wait_assigned_s)]
            if late:
                raise TimeoutError(
                    f"dispatchers {', '.join(late)} got no partitions within {wait_assigned_s}s; "
                    "is another consumer in the same group holding them?"
                )
        log.info("eventing plane started", extra={"dispatchers": [c.name for c in self.configs]})

    def stop(self, timeout_s: float = 40.0) -> StopReport:
        """Stop every dispatcher in parallel: in-flight deliveries finish, within ``timeout_s``.

        Each commits what it delivered; what was not finished stays uncommitted and is
        read again by the next consumer of its group.
        """
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(10)
            self._supervisor = None
        deadline = time.monotonic() + timeout_s
        for d in self.dispatchers:
            d.request_stop()
        late = [
            d.config.name
            for d in self.dispatchers
            if not d.stop(max(0.1, deadline - time.monotonic()))
        ]
        return StopReport({d.config.name: d.unfinished for d in self.dispatchers}, late)

    def _supervise(self) -> None:
        while not self._stopping.wait(0.2):
            for slot in self._slots:
                self._check(slot)

    def _check(self, slot: _Slot) -> None:
        d = slot.dispatcher
        if d.running or d.stop_requested or self._stopping.is_set():
            return
        now = time.monotonic()
        name = d.config.name
        if slot.restart_at is None:
            if now - slot.started_at > HEALTHY_S:
                slot.delay = RESTART_BACKOFF_S[0]
            why = f"{type(d.error).__name__}: {d.error}" if d.error else "its loop ended"
            d.stats.last_error = why
            slot.restart_at = now + slot.delay
            log.error(
                "dispatcher %s stopped (%s); restarting in %.1fs",
                name,
                why,
                slot.delay,
                extra={"dispatcher": name},
            )
            return
        if now < slot.restart_at:
            return
        stats = d.stats
        try:
            new = Dispatcher(d.config, self.bootstrap, stats=stats).start()
        except EventingError as err:
            slot.delay = min(slot.delay * 2, RESTART_BACKOFF_S[1])
            slot.restart_at = time.monotonic() + slot.delay
            log.error(
                "dispatcher %s could not restart (%s); trying again in %.1fs",
                name,
                err,
                slot.delay,
                extra={"dispatcher": name},
            )
            return
        stats.restarted(stats.last_error or "stopped")
        slot.dispatcher = new
        slot.started_at = time.monotonic()
        slot.restart_at = None
        slot.delay = min(slot.delay * 2, RESTART_BACKOFF_S[1])
        log.warning(
            "dispatcher %s restarted (restart %d)",
            name,
            stats.counters["restarts"],
            extra={"dispatcher": name},
        )

    def stats(self) -> list[dict[str, Any]]:
        """Per source/trigger: counters, latency, and per-partition lag (approximate)."""
        return [d.stats.snapshot().as_dict() for d in self.dispatchers]

    def live_stats(self) -> list[DispatchStats]:
        return [d.stats for d in self.dispatchers]

    def collector(self) -> EventingCollector:
        """A Prometheus collector over this plane's figures (register it on a registry)."""
        return EventingCollector(self.live_stats)
