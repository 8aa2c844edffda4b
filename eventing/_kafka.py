"""The only module that touches kafka-python: producer, consumer, admin, state reader.

Everything above it sees :class:`~eventing.codec.KafkaRecord` and :class:`Consumed`
values; every kafka-python error becomes :class:`~eventing.errors.KafkaUnavailableError`
here, with the cause chained.
"""

from __future__ import annotations

import logging
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

with warnings.catch_warnings():
    # kafka-python 3.0 loads its protocol schemas with importlib.resources.read_text,
    # deprecated since Python 3.11; harmless, and not ours to fix. Only at import.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
    from kafka.errors import KafkaError, TopicAlreadyExistsError
    from kafka.structs import OffsetAndMetadata

from eventing.codec import KafkaRecord
from eventing.errors import KafkaUnavailableError

__all__ = [
    "TP",
    "Consumed",
    "Consumer",
    "Producer",
    "check_reachable",
    "commit_group",
    "committed_offsets",
    "ensure_topics",
    "list_topics",
    "read_from",
    "read_topic",
]

log = logging.getLogger(__name__)

TP = tuple[str, int]
"""A (topic, partition) pair."""

OnAssign = Callable[[list[TP]], Mapping[TP, int]]
"""Called with newly assigned partitions; returns offsets to read again from (kept partitions)."""

OnRevoke = Callable[[list[TP]], Mapping[TP, int]]
"""Called with partitions given up; returns the offsets to commit before they go."""

BOOTSTRAP_TIMEOUT_MS = 5000
"""How long a client tries to reach the broker before failing (kafka-python's default is 30 s)."""


@dataclass(frozen=True, slots=True)
class Consumed:
    """A record read from Kafka, with where it came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    record: KafkaRecord

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


@contextmanager
def _converted(what: str, bootstrap: str) -> Iterator[None]:
    try:
        yield
    except KafkaError as err:
        raise KafkaUnavailableError(
            f"Kafka at {bootstrap} failed to {what}: {type(err).__name__}: {err}; "
            "check that the broker runs (`mlfn broker`) and --bootstrap/MLFN_BOOTSTRAP_SERVERS"
        ) from err


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int) -> None:
    """Create the topics that do not exist yet, with ``partitions`` partitions each."""
    names = sorted(set(topics))
    if not names:
        return
    with _converted("create topics " + ", ".join(names), bootstrap):
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="mlfn-admin",
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        )
        try:
            existing = set(admin.list_topics())
            missing = [n for n in names if n not in existing]
            for name in missing:
                with suppress(TopicAlreadyExistsError):  # created concurrently: fine
                    admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()


def list_topics(bootstrap: str) -> dict[str, int]:
    """Every topic of the cluster with its partition count."""
    with _converted("list topics", bootstrap):
        c = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS
        )
        try:
            return {t: len(c.partitions_for_topic(t) or ()) for t in c.topics()}
        finally:
            c.close(autocommit=False)


def committed_offsets(bootstrap: str, group: str, tps: Iterable[TP]) -> dict[TP, int]:
    """The committed offsets of ``group`` on ``tps`` (partitions it never committed are absent)."""
    out: dict[TP, int] = {}
    with _converted(f"read the offsets of group {group!r}", bootstrap):
        c = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        )
        try:
            for t, p in tps:
                off = c.committed(TopicPartition(t, p))
                if off is not None and off >= 0:
                    out[(t, p)] = int(off)
        finally:
            c.close(autocommit=False)
    return out


def commit_group(bootstrap: str, group: str, offsets: Mapping[TP, int]) -> None:
    """Commit ``offsets`` for ``group`` without joining it (the group must have no members)."""
    if not offsets:
        return
    with _converted(f"commit offsets of group {group!r}", bootstrap):
        c = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        )
        try:
            c.assign([TopicPartition(t, p) for t, p in offsets])
            c.commit(
                {
                    TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                    for (t, p), o in offsets.items()
                }
            )
        finally:
            c.close(autocommit=False)


def check_reachable(bootstrap: str, timeout_s: float = BOOTSTRAP_TIMEOUT_MS / 1000) -> None:
    """Fail fast, with a clear error, when no bootstrap server accepts a TCP connection.

    (A kafka-python client that cannot bootstrap also leaks its sockets.)
    """
    deadline = time.monotonic() + timeout_s
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    while True:
        for server in servers:
            host, _, port = server.rpartition(":")
            try:
                socket.create_connection((host or "localhost", int(port)), timeout=0.5).close()
                return
            except (OSError, ValueError):
                continue
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(
                f"no Kafka answers at {bootstrap}: check that the broker runs (`mlfn broker`) "
                "and --bootstrap/MLFN_BOOTSTRAP_SERVERS"
            )
        time.sleep(0.1)


class Producer:
    """A thread-safe producer of :class:`KafkaRecord` values."""

    def __init__(self, bootstrap: str, *, linger_ms: int = 5, acks: int | str = "all") -> None:
        self.bootstrap = bootstrap
        check_reachable(bootstrap)
        with _converted("connect a producer", bootstrap):
            self._p = KafkaProducer(
                bootstrap_servers=bootstrap,
                linger_ms=linger_ms,
                acks=acks,
                client_id="mlfn",
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            )

    def send(
        self,
        topic: str,
        record: KafkaRecord,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        on_acked: Callable[[], None] | None = None,
    ) -> Callable[[float], int]:
        """Send asynchronously; returns ``wait(timeout_s)``: the record's offset, or raises.

        ``on_acked()`` runs on the producer's I/O thread once the broker has the record.
        """
        with _converted(f"send to {topic!r}", self.bootstrap):
            fut = self._p.send(
                topic,
                value=record.value,
                key=record.key,
                headers=list(record.headers),
                partition=partition,
                timestamp_ms=timestamp_ms,
            )
        if on_acked is not None:
            fut.add_callback(lambda _metadata: on_acked())

        def wait(timeout_s: float) -> int:
            with _converted(f"send to {topic!r}", self.bootstrap):
                return int(fut.get(timeout=timeout_s).offset)

        return wait

    def send_sync(self, topic: str, record: KafkaRecord, timeout_s: float = 10.0) -> None:
        self.send(topic, record)(timeout_s)

    def partitions_for(self, topic: str) -> set[int]:
        with _converted(f"read partitions of {topic!r}", self.bootstrap):
            return set(self._p.partitions_for(topic) or ())

    def flush(self, timeout_s: float | None = None) -> None:
        with _converted("flush", self.bootstrap):
            self._p.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        with _converted("close the producer", self.bootstrap):
            self._p.close(timeout=timeout_s)


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's IO thread, inside a rebalance, while :meth:`Consumer.poll` waits.

    Blocking consumer calls are refused there (they would wait on the loop they run on),
    so the callbacks only do bookkeeping and return what to do; the Kafka side (commit
    before giving partitions up, repositioning what is kept) is done here, awaited.
    """

    def __init__(self, consumer: KafkaConsumer, on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        self._c = consumer
        self._on_assign = on_assign
        self._on_revoke = on_revoke

    async def on_partitions_revoked(self, revoked: Any) -> None:
        offsets = self._on_revoke([(tp.topic, tp.partition) for tp in revoked])
        if not offsets:
            return
        try:
            await self._c.commit_async(
                {
                    TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                    for (t, p), o in offsets.items()
                }
            )
        except KafkaError as err:  # the next owner reads these again: duplicates, no loss
            log.warning("commit before a rebalance failed: %s: %s", type(err).__name__, err)

    async def on_partitions_lost(self, lost: Any) -> None:
        self._on_revoke([(tp.topic, tp.partition) for tp in lost])  # too late to commit

    async def on_partitions_assigned(self, assigned: Any) -> None:
        tps = [(tp.topic, tp.partition) for tp in assigned]
        rewind = self._on_assign(tps)
        # kafka-python keeps the position and the paused flag of a partition that stays
        # with this member across a rebalance; the caller starts every assigned partition
        # afresh, so resume it, and read again what it had taken and not finished.
        self._c.resume(*[TopicPartition(t, p) for t, p in tps])
        for (t, p), offset in rewind.items():
            self._c.seek(TopicPartition(t, p), offset)


class Consumer:
    """A consumer-group member with manual commits. Not thread-safe: one thread uses it.

    Rebalance callbacks run during :meth:`poll`, on kafka-python's IO thread while the
    polling thread waits: they must not block and must not call this consumer.
    ``on_revoke`` returns the offsets to commit before the partitions go; ``on_assign``
    returns, per partition, the offset to read again from (a partition this member kept
    but whose taken records the caller dropped), or nothing.

    Fetch wait: the embedded broker (Tansu 0.6) answers a fetch at once when records are
    there; otherwise it looks again after half the fetch's ``max_wait``, then three
    quarters, seven eighths, ..., and answers at the first look that finds records (or at
    ``max_wait``, empty). So a record that comes while a fetch is held waits up to half
    that fetch's wait. While records flow, fetches ask for ``fetch_wait_ms``; after
    ``IDLE_AFTER_S`` without a record, for ``idle_fetch_wait_ms`` (fewer empty fetches:
    an idle member costs less; the first record after a pause waits up to half of it).
    A Kafka broker answers as soon as records arrive, either way.
    """

    IDLE_AFTER_S = 1.0

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: Iterable[str],
        *,
        initial_offset: Literal["earliest", "latest"] = "earliest",
        on_assign: OnAssign = lambda tps: {},
        on_revoke: OnRevoke = lambda tps: {},
        max_poll_records: int = 500,
        session_timeout_ms: int = 6000,
        client_id: str | None = None,
        fetch_wait_ms: int = 500,
        idle_fetch_wait_ms: int = 500,
    ) -> None:
        self.bootstrap = bootstrap
        self._busy_wait, self._idle_wait = fetch_wait_ms, idle_fetch_wait_ms
        self._last_records = 0.0
        with _converted(f"join consumer group {group!r}", bootstrap):
            self._c = KafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=group,
                client_id=client_id or f"mlfn-{group}",
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                enable_auto_commit=False,
                auto_offset_reset=initial_offset,
                max_poll_records=max_poll_records,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=max(100, session_timeout_ms // 6),
                max_poll_interval_ms=300_000,
                fetch_max_wait_ms=idle_fetch_wait_ms,
            )
            self._c.subscribe(list(topics), listener=_Listener(self._c, on_assign, on_revoke))
        # kafka-python reads its fetcher's config for every fetch it builds; where that
        # is not so (another version), the wait stays the idle one: slower, still correct
        fetcher = getattr(self._c, "_fetcher", None)
        config = getattr(fetcher, "config", None)
        self._fetch_config = (
            config if isinstance(config, dict) and "fetch_max_wait_ms" in config else None
        )

    @property
    def idle(self) -> bool:
        """No record for ``IDLE_AFTER_S``: fetches ask for the idle wait."""
        return time.monotonic() - self._last_records > self.IDLE_AFTER_S

    def _set_fetch_wait(self, wait_ms: int) -> None:
        if self._fetch_config is not None and self._fetch_config["fetch_max_wait_ms"] != wait_ms:
            self._fetch_config["fetch_max_wait_ms"] = wait_ms

    def poll(self, timeout_s: float) -> list[Consumed]:
        with _converted("poll", self.bootstrap):
            batches = self._c.poll(timeout_ms=int(timeout_s * 1000))
        now = time.monotonic()
        if batches:
            self._last_records = now
            self._set_fetch_wait(self._busy_wait)
        elif now - self._last_records > self.IDLE_AFTER_S:
            self._set_fetch_wait(self._idle_wait)
        out: list[Consumed] = []
        for tp, records in batches.items():
            for r in records:
                out.append(
                    Consumed(
                        tp.topic,
                        tp.partition,
                        r.offset,
                        r.timestamp,
                        KafkaRecord(value=r.value, key=r.key, headers=list(r.headers or ())),
                    )
                )
        return out

    def commit(self, offsets: Mapping[TP, int]) -> None:
        """Commit ``offsets`` (the next offset to read, per partition) synchronously."""
        if not offsets:
            return
        with _converted("commit offsets", self.bootstrap):
            self._c.commit(
                {
                    TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                    for (t, p), o in offsets.items()
                }
            )

    def commit_async(self, offsets: Mapping[TP, int], done: Callable[[str | None], None]) -> None:
        """Commit ``offsets`` without waiting for the broker.

        ``done(None)`` once they are committed, ``done(reason)`` when the commit failed;
        either runs on the polling thread, during a later :meth:`poll` (or commit).
        """

        def callback(_offsets: Any, response: Any) -> None:
            done(
                f"{type(response).__name__}: {response}"
                if isinstance(response, Exception)
                else None
            )

        with _converted("commit offsets", self.bootstrap):
            self._c.commit_async(
                {
                    TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                    for (t, p), o in offsets.items()
                },
                callback=callback,
            )

    def highwater(self, tps: Iterable[TP]) -> dict[TP, int]:
        """End offsets from the latest fetch responses (no request); partitions not fetched
        yet are absent."""
        out: dict[TP, int] = {}
        for t, p in tps:
            with suppress(KafkaError):  # revoked meanwhile: no figure
                hw = self._c.highwater(TopicPartition(t, p))
                if hw is not None:
                    out[(t, p)] = int(hw)
        return out

    def pause(self, tps: Iterable[TP]) -> None:
        self._c.pause(*[TopicPartition(t, p) for t, p in tps])

    def resume(self, tps: Iterable[TP]) -> None:
        self._c.resume(*[TopicPartition(t, p) for t, p in tps])

    def resolve_positions(self, tps: Iterable[TP]) -> None:
        """Fix the read position of ``tps`` now (committed offset, else ``initial_offset``).

        kafka-python resolves it lazily at the first fetch; until then a ``latest`` member
        would skip records produced after it was assigned.
        """
        with _converted("read positions", self.bootstrap):
            for t, p in tps:
                self._c.position(TopicPartition(t, p))

    def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        """End offsets as the broker reports them (approximate on Tansu, see docs)."""
        with _converted("read end offsets", self.bootstrap):
            ends = self._c.end_offsets([TopicPartition(t, p) for t, p in tps])
        return {(tp.topic, tp.partition): int(o) for tp, o in ends.items()}

    def close(self) -> None:
        with _converted("close the consumer", self.bootstrap):
            self._c.close(autocommit=False)


def read_topic(
    bootstrap: str, topic: str, *, quiet_s: float = 0.3, limit_s: float = 15.0
) -> list[Consumed]:
    """Read every record of a topic from the beginning, without a consumer group.

    Stops when every partition's position has reached its reported end offset and a poll
    of ``quiet_s`` returned nothing (end offsets alone are not trusted: on Tansu they are
    approximate).
    """
    return read_from(bootstrap, topic, None, quiet_s=quiet_s, limit_s=limit_s)


def read_from(
    bootstrap: str,
    topic: str,
    starts: Mapping[int, int] | None,
    *,
    quiet_s: float = 0.3,
    limit_s: float = 15.0,
) -> list[Consumed]:
    """Read a topic from ``starts`` (offset per partition; others and None: the beginning)."""
    out: list[Consumed] = []
    with _converted(f"read topic {topic!r}", bootstrap):
        c = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        )
        try:
            parts = c.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                return out
            c.assign(tps)
            c.seek_to_beginning(*tps)
            for tp in tps:
                if starts and starts.get(tp.partition):
                    c.seek(tp, starts[tp.partition])
            ends = c.end_offsets(tps)
            deadline = time.monotonic() + limit_s
            while time.monotonic() < deadline:
                batches = c.poll(timeout_ms=int(quiet_s * 1000))
                for tp, records in batches.items():
                    for r in records:
                        rec = KafkaRecord(value=r.value, key=r.key, headers=list(r.headers or ()))
                        out.append(Consumed(tp.topic, tp.partition, r.offset, r.timestamp, rec))
                if not batches and all(c.position(tp) >= ends[tp] for tp in tps):
                    break
        finally:
            c.close(autocommit=False)
    return out
