"""Producing records: JSON values or CloudEvents (Kafka binding, binary or structured).

Example:
    >>> with EventProducer("127.0.0.1:9092") as p:             # doctest: +SKIP
    ...     p.send("digits.raw", {"pixels": [0] * 64, "label": 3})
    ...     p.send("digits.raw", {"x": 1}, format="binary", type="mlfn.digits.raw")
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from types import TracebackType
from typing import Any, Literal

from eventing import codec
from eventing._kafka import Producer, ensure_topics
from eventing.codec import KafkaRecord
from runtime import events
from runtime.events import CloudEvent

__all__ = [
    "DEFAULT_TOPIC",
    "EventProducer",
    "Format",
    "default_topic",
    "digits_records",
    "encode",
    "read_json_lines",
]

Format = Literal["json", "binary", "structured"]
DEFAULT_TOPIC = "digits.raw"
_JSON = [("content-type", b"application/json")]
_END = object()


def encode(
    value: Any,
    *,
    format: Format = "json",
    key: str | None = None,
    type: str = "mlfn.record",
    source: str = "/mlfn/produce",
) -> KafkaRecord:
    """Encode one value as a Kafka record.

    ``json``: the value as JSON with a ``content-type: application/json`` header.
    ``binary``/``structured``: a CloudEvent of ``type``/``source`` with the value as data
    (a :class:`CloudEvent` value is sent as it is).
    """
    kbytes = key.encode() if key is not None else None
    if format == "json":
        return KafkaRecord(value=json.dumps(value).encode(), key=kbytes, headers=list(_JSON))
    ev = value if isinstance(value, CloudEvent) else events.new_event(type, source, value)
    if format == "binary":
        return codec.to_kafka_binary(ev, key=key)
    if format == "structured":
        return codec.to_kafka_structured(ev, key=key)
    raise ValueError(f"unknown format {format!r}; use json, binary or structured")


class EventProducer:
    """Sends values to topics, creating the topics with ``partitions`` partitions first."""

    def __init__(self, bootstrap: str, *, partitions: int = 4) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self._producer = Producer(bootstrap, linger_ms=5)
        self._topics: set[str] = set()

    def ensure(self, topic: str) -> None:
        if topic not in self._topics:
            ensure_topics(self.bootstrap, [topic], self.partitions)
            self._topics.add(topic)

    def send(self, topic: str, value: Any, **options: Any) -> None:
        """Send one value asynchronously (see :func:`encode` for ``options``)."""
        self.ensure(topic)
        self._producer.send(topic, encode(value, **options))

    def send_record(self, topic: str, record: KafkaRecord, partition: int | None = None) -> None:
        self.ensure(topic)
        self._producer.send(topic, record, partition=partition)

    def stream(
        self,
        topic: str,
        values: Iterable[Any],
        *,
        rate: float | None = None,
        key_of: Callable[[Any], str | None] = lambda v: None,
        progress: Callable[[int], None] | None = None,
        progress_every: int = 1000,
        on_acked: Callable[[Any], None] | None = None,
        **options: Any,
    ) -> int:
        """Send every value, at most ``rate`` per second; returns how many were sent.

        With a ``rate``, each value is taken from ``values`` when its turn comes, so a
        generator that stamps its values stamps them as they are sent. ``on_acked(value)``
        runs on the producer's I/O thread once the broker has the value's record."""
        self.ensure(topic)
        start = time.monotonic()
        n = 0
        it = iter(values)
        while True:
            if rate:
                ahead = start + n / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing, not synchronisation
            value = next(it, _END)
            if value is _END:
                break
            n += 1
            acked = None if on_acked is None else partial(on_acked, value)
            self._producer.send(topic, encode(value, key=key_of(value), **options), on_acked=acked)
            if progress is not None and n % progress_every == 0:
                progress(n)
        self._producer.flush()
        return n

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def digits_records(count: int | None = None) -> Iterator[dict[str, Any]]:
    """scikit-learn's bundled digits as ``{"pixels": [64 ints], "label": n}``, cycling.

    ``count=None`` yields the 1,797 images once.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = [
        {"pixels": [int(v) for v in x], "label": int(y)}
        for x, y in zip(digits.data, digits.target, strict=True)
    ]
    yield from itertools.islice(itertools.cycle(rows), count if count is not None else len(rows))


def read_json_lines(lines: Iterable[str], where: str = "stdin") -> Iterator[Any]:
    """Parse JSON lines, skipping blank ones.

    Raises:
        ValueError: a line is not JSON; the message gives the line number and the fix.
    """
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as err:
            raise ValueError(
                f"{where} line {i} is not valid JSON ({err}): {line[:80]!r}; "
                "give one JSON value per line"
            ) from err


def default_topic(functions_package: str) -> str:
    """The example pipeline's raw topic: the first KafkaSource topic in the functions package.

    Falls back to ``digits.raw`` when the package has no sources or cannot be imported.
    """
    from runtime.errors import MlfnError
    from runtime.registry import discover

    try:
        registry = discover(functions_package)
    except MlfnError:
        return DEFAULT_TOPIC
    for fn in registry:
        for source in fn.spec.sources:
            return source.topics[0]
    return DEFAULT_TOPIC
