"""Retry state that survives restarts and rebalances: failed-attempt counts per offset.

Knative keeps the attempt count in memory, so a restart starts the count again (one
event was retried 184 times and never dead-lettered: eventing-kafka-broker#3746). Here
each failure is written, before its backoff, to a one-partition state topic
``mlfn-retries.<group>`` keyed ``<topic>/<partition>/<offset>``; a success or a dead
letter writes a tombstone. A dispatcher loads the counts of each partition it is
assigned, on start and on every rebalance, before it delivers any record of it. (Commit
metadata would be the natural place, but Tansu does not keep it.)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Protocol

from eventing._kafka import Producer, ensure_topics, read_topic
from eventing.codec import KafkaRecord

__all__ = ["KafkaRetryState", "MemoryRetryState", "RetryState", "state_topic"]


def state_topic(group: str) -> str:
    """The state topic of a consumer group."""
    return f"mlfn-retries.{group}"


class RetryState(Protocol):
    def failures(self, key: str) -> int: ...
    def record(self, key: str, failures: int) -> None: ...
    def clear(self, key: str) -> None: ...


class MemoryRetryState:
    """Retry state in memory (tests; dispatchers that need no durability)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def failures(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)

    def record(self, key: str, failures: int) -> None:
        with self._lock:
            self._counts[key] = failures

    def clear(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)


class KafkaRetryState(MemoryRetryState):
    """Retry state in a compact-style Kafka topic, loaded per assigned partition, written synchronously."""

    def __init__(self, bootstrap: str, group: str, producer: Producer) -> None:
        super().__init__()
        self.topic = state_topic(group)
        self._producer = producer
        self.bootstrap = bootstrap
        ensure_topics(bootstrap, [self.topic], partitions=1)

    def _load(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in read_topic(self.bootstrap, self.topic):
            key = (c.record.key or b"").decode()
            if c.record.value:
                counts[key] = int(json.loads(c.record.value)["failures"])
            else:
                counts.pop(key, None)
        return counts

    def reload(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read the counts of newly assigned partitions (their previous owner may have written them)."""
        wanted = {f"{t}/{p}" for t, p in partitions}
        loaded = self._load()
        with self._lock:
            for key in [k for k in self._counts if k.rsplit("/", 1)[0] in wanted]:
                del self._counts[key]
            for key, n in loaded.items():
                if key.rsplit("/", 1)[0] in wanted:
                    self._counts[key] = n

    def record(self, key: str, failures: int) -> None:
        value = json.dumps({"failures": failures}).encode()
        # One record per send, flushed: each batch holds one record, which keeps Tansu's
        # end offsets exact for this topic.
        self._producer.send_sync(self.topic, KafkaRecord(value=value, key=key.encode()))
        super().record(key, failures)

    def clear(self, key: str) -> None:
        if self.failures(key) == 0:
            return
        self._producer.send_sync(self.topic, KafkaRecord(value=None, key=key.encode()))
        super().clear(key)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
