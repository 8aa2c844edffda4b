"""A KafkaSource/Trigger dispatcher: consume a topic, POST each record as a CloudEvent.

Semantics (Knative's, plus durable retry state and batching):

- ``ordered``: per partition one request in flight, in offset order; ``unordered``: up to
  ``max_in_flight`` per partition.
- At-least-once: an offset is committed only when it and every offset before it in its
  partition were delivered (2xx), filtered out, or dead-lettered.
- Retries follow the delivery spec; the failure count of each offset is persisted
  (:mod:`eventing.retrystate`), so a restart continues the count instead of resetting it.
- Malformed records go to the dead-letter sink with the reason; the stream goes on.
- With ``batch``, up to N events (or what arrived within T ms) of one partition go in one
  ``application/cloudevents-batch+json`` request.
- A CloudEvent in the response (a reply) is produced to ``reply_topic`` in binary mode.

Threads: one consumer thread owns the Kafka consumer (poll, commit, pause); rebalance
callbacks run on kafka-python's IO thread during a poll and only swap lanes; a pool of
delivery threads runs the HTTP requests. Lanes (one per partition) hold the records
between them, under one lock. A rebalance drops every lane: a partition that moves is
read by its new owner from the committed offset, one that stays is read again from its
first unfinished offset, and retry counts are loaded before either delivers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from eventing import codec
from eventing._kafka import TP, Consumed, Consumer, Producer
from eventing.delivery import HttpSender, Response, deliver
from eventing.errors import KafkaUnavailableError, MalformedRecordError
from eventing.filters import Predicate
from eventing.lanes import Lane
from eventing.records import RecordOrigin, dead_letter_event, raw_event, record_to_event
from eventing.retrystate import KafkaRetryState, MemoryRetryState, RetryState
from eventing.settings import EventingSettings
from eventing.stats import DispatchStats
from runtime import events
from runtime.events import CloudEvent, HttpMessage
from runtime.settings import CommonSettings, default_of
from runtime.spec import Delivery, EventBatch

__all__ = ["Dispatcher", "DispatcherConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatcherConfig:
    """What one dispatcher does. ``kind`` is ``source`` (wraps plain records) or ``trigger``."""

    name: str
    topics: tuple[str, ...]
    group: str
    sink: str
    kind: Literal["source", "trigger"] = "source"
    namespace: str = default_of(CommonSettings, "namespace")
    ordering: Literal["ordered", "unordered"] = "ordered"
    delivery: Delivery = field(default_factory=Delivery)
    batch: EventBatch | None = None
    initial_offset: Literal["earliest", "latest"] = "earliest"
    filter: Predicate | None = None
    reply_topic: str | None = None
    max_in_flight: int = default_of(EventingSettings, "max_in_flight")
    max_record_bytes: int = default_of(EventingSettings, "max_record_bytes")
    max_pending: int = 5000
    workers: int = default_of(EventingSettings, "dispatch_workers")
    durable_retries: bool = True
    session_timeout_ms: int = default_of(EventingSettings, "session_timeout_ms")


class Dispatcher:
    """Runs one :class:`DispatcherConfig` against Kafka at ``bootstrap``.

    Example:
        >>> d = Dispatcher(DispatcherConfig("s", ("t",), "g", "http://127.0.0.1:8080"), "127.0.0.1:9092")
        >>> d.start(); d.wait_assigned(30); d.stop()   # doctest: +SKIP
    """

    def __init__(self, config: DispatcherConfig, bootstrap: str) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.stats = DispatchStats(
            config.name, config.kind, config.topics, config.group, config.sink
        )
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._lock = threading.Lock()
        self._lanes: dict[TP, Lane] = {}
        # revoked partitions with records taken and not finished: where to read again if
        # this member gets them back (kafka-python keeps a kept partition's position)
        self._rewind: dict[TP, int] = {}
        # assigned partitions whose retry counts are loaded before any of their records
        # is queued: the previous owner may have counted failures
        self._unloaded: list[TP] = []
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._state: RetryState = MemoryRetryState()
        self._pool: ThreadPoolExecutor | None = None
        self._sender = HttpSender(pool_size=max(8, config.workers))
        self.error: BaseException | None = None

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> Dispatcher:
        """Connect, load retry state, and start consuming in a background thread.

        Raises:
            KafkaUnavailableError: the broker cannot be reached.
        """
        cfg = self.config
        self._producer = Producer(self.bootstrap, linger_ms=0)
        if cfg.durable_retries:
            self._state = KafkaRetryState(self.bootstrap, cfg.group, self._producer)
        self._consumer = Consumer(
            self.bootstrap,
            cfg.group,
            cfg.topics,
            initial_offset=cfg.initial_offset,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            session_timeout_ms=cfg.session_timeout_ms,
        )
        self._pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix=f"deliver-{cfg.name}")
        self._thread = threading.Thread(target=self._run, name=f"dispatch-{cfg.name}", daemon=True)
        self._thread.start()
        log.info(
            "dispatcher started",
            extra={"dispatcher": cfg.name, "topics": cfg.topics, "sink": cfg.sink},
        )
        return self

    def wait_assigned(self, timeout_s: float) -> bool:
        """Wait until the consumer group assigned partitions to this dispatcher."""
        return self._assigned.wait(timeout_s)

    def request_stop(self) -> None:
        """Ask the dispatcher to stop without waiting (see :meth:`stop`)."""
        self._stop.set()

    def stop(self, timeout_s: float = 40.0) -> None:
        """Stop consuming, let in-flight requests finish, commit what is done, disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("dispatcher did not stop in time", extra={"dispatcher": self.config.name})
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- consumer thread -----------------------------------------------------------

    def _run(self) -> None:
        assert self._consumer is not None and self._pool is not None
        consumer = self._consumer
        next_commit = next_lag = 0.0
        poll_s = (
            0.05
            if self.config.batch is None
            else min(0.05, self.config.batch.max_wait_ms / 1000 or 0.01)
        )
        reason = "stopped"
        all_paused = False
        last_poll = 0.0
        try:
            while not self._stop.is_set():
                if all_paused and time.monotonic() - last_poll < 1.0:
                    # every partition is paused (lanes full): poll would return at once and
                    # spin; wait for deliveries instead, polling once a second for rebalances
                    self._stop.wait(poll_s / 2)
                    records = []
                else:
                    records = consumer.poll(poll_s)
                    last_poll = time.monotonic()
                    self._settle_assignment()
                now = time.monotonic()
                with self._lock:
                    for c in records:
                        lane = self._lanes.get(c.tp)
                        if lane is None:
                            continue  # revoked within this poll; the new owner reads it
                        lane.pending.append((c, now))
                        lane.order.append(c.offset)
                    jobs = [
                        (lane, j)
                        for lane in self._lanes.values()
                        for j in lane.take(self.config.batch, now)
                    ]
                    pause = [
                        tp
                        for tp, ln in self._lanes.items()
                        if not ln.paused and len(ln.pending) > self.config.max_pending
                    ]
                    resume = [
                        tp
                        for tp, ln in self._lanes.items()
                        if ln.paused and len(ln.pending) < self.config.max_pending // 2
                    ]
                    for tp in pause:
                        self._lanes[tp].paused = True
                    for tp in resume:
                        self._lanes[tp].paused = False
                    all_paused = bool(self._lanes) and all(ln.paused for ln in self._lanes.values())
                if records:
                    self.stats.add("consumed", len(records))
                self._submit(jobs)
                if pause:
                    consumer.pause(pause)
                if resume:
                    consumer.resume(resume)
                if now >= next_commit:
                    self._commit()
                    next_commit = now + 0.1
                if now >= next_lag:
                    self._update_lag()
                    next_lag = now + 2.0
        except KafkaUnavailableError as err:
            self.error = err
            reason = f"Kafka failed: {err}"
        except Exception as err:  # the loop must say why it died
            self.error = err
            reason = f"{type(err).__name__}: {err}"
            log.exception("dispatcher loop failed", extra={"dispatcher": self.config.name})
        finally:
            self._stop.set()
            self._pool.shutdown(wait=True, cancel_futures=True)
            try:
                self._commit()
                consumer.close()
            except KafkaUnavailableError as err:
                log.warning("final commit failed: %s", err, extra={"dispatcher": self.config.name})
            if self._producer is not None:
                self._producer.close()
            self._sender.close()
            log.info("dispatcher stopped: %s", reason, extra={"dispatcher": self.config.name})

    def _on_assign(self, tps: list[TP]) -> dict[TP, int]:
        # kafka-python's IO thread, inside a rebalance: bookkeeping only (see Consumer)
        cap = 1 if self.config.ordering == "ordered" else self.config.max_in_flight
        with self._lock:
            for tp in tps:
                self._lanes[tp] = Lane(tp, cap)
            rewind = {tp: self._rewind[tp] for tp in tps if tp in self._rewind}
            self._rewind.clear()
            self._unloaded.extend(tps)
        return rewind

    def _on_revoke(self, tps: list[TP]) -> dict[TP, int]:
        # kafka-python's IO thread, inside a rebalance: bookkeeping only (see Consumer).
        # In-flight deliveries of these lanes are abandoned (their waiters see the lane go).
        offsets = {}
        with self._lock:
            for tp in tps:
                lane = self._lanes.pop(tp, None)
                if lane is None:
                    continue
                if lane.order:
                    self._rewind[tp] = lane.order[0]
                if lane.next_commit is not None and lane.next_commit != lane.committed:
                    offsets[tp] = lane.next_commit
        return offsets

    def _settle_assignment(self) -> None:
        """On the dispatcher's thread, after a poll that assigned partitions: fix their read
        positions and load their retry counts before any of their records queue; only then
        is the dispatcher "assigned" (so a ``latest`` start skips nothing produced after)."""
        with self._lock:
            tps, self._unloaded = self._unloaded, []
        if not tps:
            return
        assert self._consumer is not None
        self._consumer.resolve_positions(tps)
        if isinstance(self._state, KafkaRetryState):
            self._state.reload(tps)
        self._assigned.set()
        log.info("partitions assigned", extra={"dispatcher": self.config.name, "partitions": tps})

    def _commit(self) -> None:
        with self._lock:
            offsets = {
                tp: ln.next_commit
                for tp, ln in self._lanes.items()
                if ln.next_commit is not None and ln.next_commit != ln.committed
            }
        if not offsets:
            return
        assert self._consumer is not None
        self._consumer.commit(offsets)
        with self._lock:
            for tp, off in offsets.items():
                if tp in self._lanes:
                    self._lanes[tp].committed = off

    def _update_lag(self) -> None:
        assert self._consumer is not None
        with self._lock:
            tps = list(self._lanes)
        if not tps:
            return
        ends = self._consumer.end_offsets(tps)
        lag: dict[str, int] = {}
        with self._lock:
            for tp, end in ends.items():
                lane = self._lanes.get(tp)
                if lane is None:
                    continue
                low = lane.order[0] if lane.order else lane.next_commit
                lag[f"{tp[0]}/{tp[1]}"] = max(0, end - low) if low is not None else 0
        self.stats.set_lag(lag)

    # --- delivery threads ----------------------------------------------------------

    def _submit(self, jobs: list[tuple[Lane, list[Consumed]]]) -> None:
        assert self._pool is not None
        for lane, records in jobs:
            try:
                fut = self._pool.submit(self._process, lane, records)
            except RuntimeError:
                return  # shutting down: uncommitted records are read again by the next owner
            fut.add_done_callback(partial(self._finished, lane, records))

    def _finished(self, lane: Lane, records: list[Consumed], fut: Future[bool]) -> None:
        if fut.cancelled():
            return
        err = fut.exception()
        if err is not None:
            log.error(
                "delivery failed unexpectedly: %r", err, extra={"dispatcher": self.config.name}
            )
            self.error = err
            self._stop.set()  # never skip an offset: stop, and the restart reads it again
            return
        if not fut.result():
            return  # abandoned while stopping: not done, not committed
        with self._lock:
            if self._lanes.get(lane.tp) is not lane:
                return  # revoked meanwhile
            lane.inflight -= 1
            lane.mark_done([c.offset for c in records])
            jobs = [(lane, j) for j in lane.take(self.config.batch, time.monotonic())]
        self._submit(jobs)

    def _waiter(self, lane: Lane) -> Callable[[float], bool]:
        """A backoff wait that gives up when stopping or when ``lane``'s partition is revoked."""

        def wait(seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while True:
                if self._lanes.get(lane.tp) is not lane:
                    return False  # revoked: the new owner retries, with the persisted count
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                if self._stop.wait(min(left, 0.05)):
                    return False

        return wait

    def _process(self, lane: Lane, records: list[Consumed]) -> bool:
        """Deliver ``records`` (one, or a batch of one partition); False when abandoned."""
        cfg = self.config
        wait = self._waiter(lane)
        ready: list[tuple[Consumed, CloudEvent]] = []
        for c in records:
            origin = RecordOrigin(
                cfg.namespace, cfg.name, c.topic, c.partition, c.offset, c.timestamp_ms
            )
            try:
                ev = record_to_event(
                    c.record, origin, max_bytes=cfg.max_record_bytes, wrap=cfg.kind == "source"
                )
            except MalformedRecordError as err:
                self.stats.add("malformed")
                log.warning(
                    "malformed record %s/%d@%d: %s",
                    c.topic,
                    c.partition,
                    c.offset,
                    err.reason,
                    extra={"dispatcher": cfg.name},
                )
                if not self._dead_letter(
                    wait, raw_event(c.record, origin, err.reason), None, err.reason.encode()
                ):
                    return False
                continue
            if cfg.filter is not None and not cfg.filter(events.attributes(ev)):
                self.stats.add("filtered")
                continue
            ready.append((c, ev))
        if not ready:
            return True
        first = ready[0][0]
        key = f"{first.topic}/{first.partition}/{first.offset}"
        msg: HttpMessage = (
            events.to_http_batch([ev for _, ev in ready])
            if cfg.batch
            else events.to_http_binary(ready[0][1])
        )
        timeout = cfg.delivery.timeout.total_seconds() if cfg.delivery.timeout else None

        def failed(n: int) -> None:
            self._state.record(key, n)
            self.stats.add("retried")

        outcome = deliver(
            lambda: self._sender.post(cfg.sink, msg, timeout),
            cfg.delivery,
            failures_before=self._state.failures(key),
            record_failure=failed,
            wait=wait,
        )
        if outcome is None:
            return False
        if outcome.delivered:
            now_ms = time.time() * 1000
            self.stats.add("delivered", len(ready))
            self.stats.observe_latency(max(0.0, now_ms - first.timestamp_ms) / 1000, len(ready))
            self._reply(outcome.response)
        elif self._lanes.get(lane.tp) is not lane:
            return False  # revoked: the new owner makes the last attempt and dead-letters
        else:
            r = outcome.response
            log.warning(
                "delivery of %d event(s) from %s failed after %d attempt(s): %s",
                len(ready),
                key,
                outcome.failures,
                r.describe(),
                extra={"dispatcher": cfg.name},
            )
            data = r.body if r.status is not None else (r.error or "").encode()
            for _, ev in ready:
                if not self._dead_letter(wait, ev, r.status, data):
                    return False
        self._state.clear(key)
        return True

    def _dead_letter(
        self, wait: Callable[[float], bool], event: CloudEvent, code: int | None, data: bytes
    ) -> bool:
        cfg = self.config
        dls = cfg.delivery.dead_letter_sink
        if not dls:
            self.stats.add("dropped")
            log.error(
                "event %s dropped: delivery failed and no dead-letter sink is set "
                "(set delivery.dead_letter_sink or --dead-letter)",
                event["id"],
                extra={"dispatcher": cfg.name},
            )
            return True
        ev = dead_letter_event(event, dest=cfg.sink, code=code, data=data)
        attempt = 0
        while True:
            attempt += 1
            err = self._send_dead_letter(dls, ev)
            if err is None:
                self.stats.add("dead_lettered")
                return True
            log.warning(
                "dead-letter sink %s failed: %s; retrying", dls, err, extra={"dispatcher": cfg.name}
            )
            if not wait(cfg.delivery.backoff(min(attempt, 10)).total_seconds()):
                return False

    def _send_dead_letter(self, dls: str, ev: CloudEvent) -> str | None:
        if dls.startswith(("http://", "https://")):
            timeout = (
                self.config.delivery.timeout.total_seconds()
                if self.config.delivery.timeout
                else None
            )
            r = self._sender.post(dls, events.to_http_binary(ev), timeout)
            return None if r.ok else r.describe()
        assert self._producer is not None
        try:
            self._producer.send_sync(dls, codec.to_kafka_binary(ev))
        except KafkaUnavailableError as err:
            return str(err)
        return None

    def _reply(self, r: Response) -> None:
        topic = self.config.reply_topic
        if not r.body or not events.is_cloudevent_http(r.headers):
            return
        try:
            if r.headers.get("content-type", "").startswith(events.BATCH_CONTENT_TYPE):
                replies = events.from_http_batch(r.body)
            else:
                replies = [events.from_http_message(r.headers, r.body)]
        except events.CodecError as err:
            log.warning(
                "sink replied with an invalid CloudEvent: %s",
                err,
                extra={"dispatcher": self.config.name},
            )
            return
        if topic is None:
            return
        assert self._producer is not None
        waits = [self._producer.send(topic, codec.to_kafka_binary(ev)) for ev in replies]
        for wait in waits:
            wait(10.0)
        self.stats.add("replies", len(replies))
