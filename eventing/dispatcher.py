"""A KafkaSource/Trigger dispatcher: consume a topic, POST each record as a CloudEvent.

Semantics (Knative's, plus durable retry state and batching):

- ``ordered``: per partition one request in flight, in offset order; ``unordered``: up to
  ``max_in_flight`` per partition.
- At-least-once: an offset is committed only when it and every offset before it in its
  partition were delivered (2xx), filtered out, or dead-lettered.
- Retries follow the delivery spec; the failure count of each offset is persisted
  (:mod:`eventing.retrystate`), so a restart continues the count instead of resetting it.
- Malformed records go to the dead-letter sink with the reason; the stream goes on. So
  does a record that fails in any other way before it is sent (a key that does not
  decode as the source's key type, an event no HTTP request can carry): a bad record
  never stops a dispatcher. A dispatcher that stops anyway (Kafka gone) says why in
  :attr:`Dispatcher.error`; the plane restarts it (:mod:`eventing.plane`).
- With ``batch``, up to N events (or what arrived within T ms) of one partition go in one
  ``application/cloudevents-batch+json`` request.
- A CloudEvent in the response (a reply) is produced to ``reply_topic`` in binary mode.
- Every delivered event gets the extensions Knative's Kafka dispatcher adds
  (``knativekafkapartition``, ``knativekafkaoffset``: where the record was read) and the
  config's ``extensions`` (a KafkaSource's ``ceOverrides``), before filters see it.
- A filter judges a binary-mode CloudEvent record from its ``ce_*`` headers alone
  (:func:`eventing.wire.binary_attributes`, the same attributes as the full event): a
  record it drops is counted as filtered without building its event; anything unusual is
  judged on the full event, as before.

Threads: one consumer thread owns the Kafka consumer (poll, commit, pause); rebalance
callbacks run on kafka-python's IO thread during a poll and only swap lanes; the first
attempt of each delivery to an ``http://`` sink runs on one asyncio loop thread
(:mod:`eventing.fastpath`: keep-alive connections, no thread per request), and what
that attempt does not settle (a failure to retry, a reply to produce, a dead letter,
a malformed or filtered record) runs on a pool of delivery threads, with that first
response. Lanes (one per partition) hold the records
between them, under one lock. A rebalance drops every lane: a partition that moves is
read by its new owner from the committed offset, one that stays is read again from its
first unfinished offset, and retry counts are loaded before either delivers.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from eventing import codec
from eventing._kafka import TP, Consumed, Consumer, Producer
from eventing.delivery import HttpSender, Response, deliver, http_target
from eventing.errors import KafkaUnavailableError, MalformedRecordError
from eventing.fastpath import AsyncPoster
from eventing.filters import Predicate
from eventing.lanes import Lane
from eventing.records import (
    KeyType,
    RecordOrigin,
    dead_letter_event,
    raw_event,
    record_to_event,
)
from eventing.retrystate import KafkaRetryState, MemoryRetryState, RetryState
from eventing.settings import EventingSettings
from eventing.stats import DispatchStats
from eventing.wire import WireEncoder, binary_attributes
from runtime import events
from runtime.events import CloudEvent, HttpMessage
from runtime.settings import CommonSettings, default_of
from runtime.spec import Delivery, EventBatch

__all__ = ["Dispatcher", "DispatcherConfig"]

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.25
"""The poll timeout of an idle dispatcher (its consumer saw no record for a second and no
record is pending): fewer turns of the loop while nothing comes, which pays for the short
idle fetch wait. A poll still returns as soon as records come; a stop, or the commit of
deliveries that finish meanwhile, waits up to this long."""


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
    extensions: tuple[tuple[str, str], ...] = ()
    """Extensions set on every event (a KafkaSource's ``ceOverrides.extensions``)."""
    reply_topic: str | None = None
    max_in_flight: int = default_of(EventingSettings, "max_in_flight")
    max_record_bytes: int = default_of(EventingSettings, "max_record_bytes")
    max_pending: int = 5000
    workers: int = default_of(EventingSettings, "dispatch_workers")
    durable_retries: bool = True
    session_timeout_ms: int = default_of(EventingSettings, "session_timeout_ms")
    fetch_wait_ms: int = default_of(EventingSettings, "fetch_wait_ms")
    idle_fetch_wait_ms: int = default_of(EventingSettings, "idle_fetch_wait_ms")
    key_type: KeyType = "string"
    epoch: str | None = None
    """The broker's epoch, when its log does not outlive it: part of every wrapped id."""


class Dispatcher:
    """Runs one :class:`DispatcherConfig` against Kafka at ``bootstrap``.

    Example:
        >>> d = Dispatcher(DispatcherConfig("s", ("t",), "g", "http://127.0.0.1:8080"), "127.0.0.1:9092")
        >>> d.start(); d.wait_assigned(30); d.stop()   # doctest: +SKIP
    """

    def __init__(
        self, config: DispatcherConfig, bootstrap: str, *, stats: DispatchStats | None = None
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        # a restarted dispatcher keeps counting in the stats of the one it replaces
        self.stats = stats or DispatchStats(
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
        self._target = http_target(config.sink)
        self._fast: AsyncPoster | None = None
        self._committing = False
        self._commit_sent = 0.0
        self._commit_failing = False
        self._wire = self._wire_encoder()
        names = [k for k, _ in config.extensions]
        # extensions the SDK would rename or merge (it lower-cases names) leave it off
        self._header_filter = (
            config.filter is not None
            and len(set(names)) == len(names)
            and all(_LOWER_NAME.fullmatch(k) for k in names)
        )
        self.error: BaseException | None = None
        self.stop_requested = False
        self.unfinished = 0
        """Records taken from Kafka and not finished when the loop ended (read again later)."""

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
            fetch_wait_ms=cfg.fetch_wait_ms,
            idle_fetch_wait_ms=cfg.idle_fetch_wait_ms,
        )
        self._pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix=f"deliver-{cfg.name}")
        if self._target is not None:
            self._fast = AsyncPoster(f"deliver-fast-{cfg.name}").start()
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
        self.stop_requested = True
        self._stop.set()

    def stop(self, timeout_s: float = 40.0) -> bool:
        """Stop consuming, let in-flight requests finish, commit what is done, disconnect.

        Returns:
            False when the loop did not end within ``timeout_s`` (what it had not
            committed is read again by the next consumer of the group).
        """
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error(
                    "dispatcher did not stop within %.0fs; its uncommitted records will be "
                    "delivered again",
                    timeout_s,
                    extra={"dispatcher": self.config.name},
                )
                return False
            self._thread = None
        return True

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
        quiet = True  # no lane holds a record
        last_poll = 0.0
        try:
            while not self._stop.is_set():
                if all_paused and time.monotonic() - last_poll < 1.0:
                    # every partition is paused (lanes full): poll would return at once and
                    # spin; wait for deliveries instead, polling once a second for rebalances
                    self._stop.wait(poll_s / 2)
                    records = []
                else:
                    records = consumer.poll(IDLE_POLL_S if quiet and consumer.idle else poll_s)
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
                    quiet = not any(ln.pending for ln in self._lanes.values())
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
            if self._fast is not None:
                self._fast.close()  # first attempts in flight stay uncommitted
            self._pool.shutdown(wait=True, cancel_futures=True)
            with self._lock:
                self.unfinished = sum(len(ln.order) for ln in self._lanes.values())
            try:
                self._commit(wait=True)
                consumer.close()
            except KafkaUnavailableError as err:
                log.warning("final commit failed: %s", err, extra={"dispatcher": self.config.name})
            if self._producer is not None:
                self._producer.close()
            self._sender.close()
            log.info(
                "dispatcher stopped: %s (%d record(s) unfinished, delivered again later)",
                reason,
                self.unfinished,
                extra={"dispatcher": self.config.name},
            )

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

    def _commit(self, *, wait: bool = False) -> None:
        """Commit what is done: without waiting (one commit in flight at a time; a commit
        that blocked the consumer thread held back every record behind it), or, with
        ``wait``, synchronously (when stopping)."""
        if self._committing and not wait and time.monotonic() - self._commit_sent < 10.0:
            return  # (a commit that never answers does not stop the next one for long)
        with self._lock:
            lanes = {
                tp: (ln, ln.next_commit)
                for tp, ln in self._lanes.items()
                if ln.next_commit is not None and ln.next_commit != ln.committed
            }
        if not lanes:
            return
        assert self._consumer is not None
        offsets = {tp: off for tp, (_, off) in lanes.items()}
        if wait:
            self._consumer.commit(offsets)
            self._committed(lanes, None)
            return
        self._committing, self._commit_sent = True, time.monotonic()
        self._consumer.commit_async(offsets, partial(self._committed, lanes))

    def _committed(self, lanes: dict[TP, tuple[Lane, int]], error: str | None) -> None:
        """A commit ended (on the consumer thread, during a poll)."""
        self._committing = False
        if error is not None:  # the offsets stay due: the next commit carries them again
            if not self._commit_failing:
                log.warning(
                    "offset commit failed: %s; trying again (until it succeeds, a restart "
                    "delivers those records again)",
                    error,
                    extra={"dispatcher": self.config.name},
                )
            self._commit_failing = True
            return
        self._commit_failing = False
        with self._lock:
            for tp, (lane, off) in lanes.items():
                if self._lanes.get(tp) is lane:
                    lane.committed = off

    def _update_lag(self) -> None:
        assert self._consumer is not None
        with self._lock:
            tps = list(self._lanes)
        if not tps:
            return
        # the fetch responses carry the end offsets: no request that would block the
        # consumer thread, except for partitions not fetched yet
        ends = self._consumer.highwater(tps)
        missing = [tp for tp in tps if tp not in ends]
        if missing:
            ends.update(self._consumer.end_offsets(missing))
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
        if self._stop.is_set():
            return  # shutting down: uncommitted records are read again by the next owner
        fast = []
        for lane, records in jobs:
            first = self._first_attempt(lane, records) if self._fast is not None else None
            if first is not None:
                fast.append(first)
            else:
                self._to_pool(lane, records, None)
        if fast:
            assert self._fast is not None
            try:
                self._fast.post_many(fast)
            except RuntimeError:
                return  # stopping
            except ValueError:  # a header no HTTP request can carry: the threads say why
                for _, _, _, done in fast:
                    self._to_pool(done.args[0], done.args[1], None)

    def _to_pool(self, lane: Lane, records: list[Consumed], answered: Response | None) -> None:
        assert self._pool is not None
        try:
            fut = self._pool.submit(self._process, lane, records, answered)
        except RuntimeError:
            return  # shutting down: uncommitted records are read again by the next owner
        fut.add_done_callback(partial(self._finished, lane, records))

    def _origin(self, c: Consumed) -> RecordOrigin:
        cfg = self.config
        return RecordOrigin(
            cfg.namespace, cfg.name, c.topic, c.partition, c.offset, c.timestamp_ms, cfg.epoch
        )

    def _event_of(self, c: Consumed, origin: RecordOrigin) -> CloudEvent:
        """The CloudEvent a record becomes, with the extensions Knative's dispatcher adds.

        Raises:
            MalformedRecordError: the record cannot become an event (the reason says why).
        """
        cfg = self.config
        ev = record_to_event(
            c.record,
            origin,
            max_bytes=cfg.max_record_bytes,
            wrap=cfg.kind == "source",
            key_type=cfg.key_type,
        )
        return events.with_attributes(
            ev,
            knativekafkapartition=str(c.partition),
            knativekafkaoffset=str(c.offset),
            **dict(cfg.extensions),
        )

    def _filtered_by_headers(self, c: Consumed) -> bool:
        """True when the filter drops ``c``, judged from its ``ce_*`` headers without
        building its event (:func:`eventing.wire.binary_attributes`); False when it
        passes or the general path must judge it."""
        if not self._header_filter:
            return False
        cfg = self.config
        try:
            attrs = binary_attributes(
                c.record,
                c.partition,
                c.offset,
                max_bytes=cfg.max_record_bytes,
                extensions=cfg.extensions,
            )
        except Exception:  # (a header without a value...) the general path says why
            return False
        return attrs is not None and cfg.filter is not None and not cfg.filter(attrs)

    def _wire_encoder(self) -> WireEncoder | None:
        cfg = self.config
        if self._target is None:
            return None
        wire = WireEncoder(
            self._target,
            namespace=cfg.namespace,
            name=cfg.name,
            epoch=cfg.epoch,
            key_type=cfg.key_type,
            max_bytes=cfg.max_record_bytes,
            extensions=cfg.extensions,
            filter=cfg.filter,
            wrap=cfg.kind == "source",
        )
        return wire if wire.supported else None

    def _first_attempt(self, lane: Lane, records: list[Consumed]) -> Any:
        """The first attempt for the loop thread, or None when the threads take the job:
        a record that is malformed, filtered or cannot be encoded, or failures counted
        before a restart (the threads' path handles each of those).

        The common record goes straight to its request bytes (:mod:`eventing.wire`);
        any other takes the general path, through a CloudEvent."""
        cfg = self.config
        first = records[0]
        if self._state.failures(f"{first.topic}/{first.partition}/{first.offset}"):
            return None
        timeout = cfg.delivery.timeout.total_seconds() if cfg.delivery.timeout else None
        done = partial(self._first_done, lane, records, len(records), first.timestamp_ms)
        if self._header_filter and any(map(self._filtered_by_headers, records)):
            return None  # the threads count it
        if self._wire is not None:
            try:
                raw = self._wire.batch(records) if cfg.batch else self._wire.request(first)
            except Exception:  # (a header without a value...) the general path says why
                raw = None
            if raw is not None:
                return (self._target, raw, timeout, done)
        ready: list[tuple[Consumed, CloudEvent]] = []
        for c in records:
            try:
                ev = self._event_of(c, self._origin(c))
            except Exception:  # the threads' path dead-letters it with its reason
                return None
            if cfg.filter is not None and not cfg.filter(events.attributes(ev)):
                return None
            ready.append((c, ev))
        try:
            msg = (
                events.to_http_batch([ev for _, ev in ready])
                if cfg.batch
                else events.to_http_binary(ready[0][1])
            )
            _check_sendable(msg)
        except Exception:
            return None
        return (self._target, msg, timeout, done)

    def _first_done(
        self, lane: Lane, records: list[Consumed], n: int, timestamp_ms: int, r: Response
    ) -> None:
        """On the loop thread: a 2xx without a reply settles the job; the rest go on."""
        if not r.ok or (r.body and events.is_cloudevent_http(r.headers)):
            self._to_pool(lane, records, r)  # retries, replies, dead letters: one code path
            return
        self.stats.add("delivered", n)
        self.stats.observe_latency(max(0.0, time.time() * 1000 - timestamp_ms) / 1000, n)
        with self._lock:
            if self._lanes.get(lane.tp) is not lane:
                return  # revoked meanwhile
            lane.inflight -= 1
            lane.mark_done([c.offset for c in records])
            jobs = [(lane, j) for j in lane.take(self.config.batch, time.monotonic())]
        self._submit(jobs)

    def _finished(self, lane: Lane, records: list[Consumed], fut: Future[bool]) -> None:
        if fut.cancelled():
            return
        err = fut.exception()
        if err is not None:
            log.error(
                "delivery failed unexpectedly: %r; stopping (the plane restarts the dispatcher, "
                "which reads the record again)",
                err,
                extra={"dispatcher": self.config.name},
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

    def _process(
        self, lane: Lane, records: list[Consumed], answered: Response | None = None
    ) -> bool:
        """Deliver ``records`` (one, or a batch of one partition); False when abandoned.

        ``answered``: the response of a first attempt already made (on the loop thread).
        """
        cfg = self.config
        wait = self._waiter(lane)
        ready: list[tuple[Consumed, CloudEvent]] = []
        single = HttpMessage({}, b"")
        for c in records:
            if self._filtered_by_headers(c):
                self.stats.add("filtered")
                continue
            origin = self._origin(c)
            try:
                ev = self._event_of(c, origin)
                if cfg.filter is not None and not cfg.filter(events.attributes(ev)):
                    self.stats.add("filtered")
                    continue
                if not cfg.batch:  # one record: encode it here, where a failure is its own
                    single = events.to_http_binary(ev)
                    _check_sendable(single)
            except MalformedRecordError as err:
                if not self._reject(wait, c, origin, err.reason):
                    return False
                continue
            except Exception as err:  # a bad record must never stop the dispatcher
                reason = f"record cannot be delivered: {type(err).__name__}: {err}"
                if not self._reject(wait, c, origin, reason):
                    return False
                continue
            ready.append((c, ev))
        if cfg.batch and ready:
            try:
                msg = events.to_http_batch([ev for _, ev in ready])
            except Exception:  # find the events that cannot be encoded; the rest go on
                kept = []
                for c, ev in ready:
                    try:
                        events.to_http_batch([ev])
                    except Exception as err:
                        reason = f"event cannot be encoded: {type(err).__name__}: {err}"
                        if not self._reject(wait, c, self._origin(c), reason):
                            return False
                        continue
                    kept.append((c, ev))
                ready = kept
                msg = events.to_http_batch([ev for _, ev in ready])
        else:
            msg = single
        if not ready:
            return True
        first = ready[0][0]
        key = f"{first.topic}/{first.partition}/{first.offset}"
        timeout = cfg.delivery.timeout.total_seconds() if cfg.delivery.timeout else None

        def failed(n: int) -> None:
            self._state.record(key, n)
            self.stats.add("retried")

        made = [answered] if answered is not None else []

        def send() -> Response:
            return made.pop() if made else self._sender.post(cfg.sink, msg, timeout)

        outcome = deliver(
            send,
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

    def _reject(
        self, wait: Callable[[float], bool], c: Consumed, origin: RecordOrigin, reason: str
    ) -> bool:
        """Dead-letter a record that cannot become a deliverable event, with ``reason``."""
        self.stats.add("malformed")
        log.warning(
            "malformed record %s/%d@%d: %s",
            c.topic,
            c.partition,
            c.offset,
            reason,
            extra={"dispatcher": self.config.name},
        )
        return self._dead_letter(wait, raw_event(c.record, origin, reason), None, reason.encode())

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
            try:
                r = self._sender.post(dls, events.to_http_binary(ev), timeout)
            except (ValueError, UnicodeError) as err:  # an event no request can carry
                return f"{type(err).__name__}: {err}"
            return None if r.ok else r.describe()
        assert self._producer is not None
        try:
            self._producer.send_sync(dls, codec.to_kafka_binary(ev))
        except (KafkaUnavailableError, ValueError, UnicodeError) as err:
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


_BAD_HEADER_NAME = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_HEADER_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
_LOWER_NAME = re.compile(r"[a-z0-9]+")


def _check_sendable(msg: HttpMessage) -> None:
    """Raise ValueError when ``msg`` cannot go out as an HTTP/1.1 request (http.client would)."""
    for name, value in msg.headers.items():
        if not name or _BAD_HEADER_NAME.search(name):
            raise ValueError(f"header name {name[:64]!r} is not an HTTP token")
        if _BAD_HEADER_VALUE.search(value):
            raise ValueError(f"header {name} has a value no HTTP request can carry: {value[:64]!r}")
