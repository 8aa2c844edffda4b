"""Bad records on the real broker never stop a dispatcher; a dispatcher that stops is restarted.

The records are the ones an ordinary Kafka client can write: a key that is not UTF-8
(``ff fe 07``, which once stopped ``preprocess`` for good), broken CloudEvent headers,
structured envelopes that are not JSON, values above the limit, random bytes. Each bad
one must reach the dead-letter topic with its reason, and every good one behind it must
be delivered.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable

import pytest

from eventing import codec
from eventing._kafka import Producer
from eventing.codec import KafkaRecord
from eventing.dispatcher import Dispatcher, DispatcherConfig
from eventing.plane import EventingPlane
from mlfn.settings import Settings
from runtime.spec import Delivery, FunctionSpec, KafkaSource
from tests.eventing.conftest import read_until, wait_until
from tests.eventing.sink import Sink

pytestmark = pytest.mark.integration

LIMIT = 2048


def bad_records(rng: random.Random) -> list[KafkaRecord]:
    ce = [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/s"), ("ce_type", b"t")]
    return [
        KafkaRecord(value=b'{"n": -1}', key=b"\xff\xfe\x07"),
        KafkaRecord(value=b'{"n": -1}', headers=[*ce[:3], ("ce_type", b"\xff\xfe")]),
        KafkaRecord(value=b"{}", headers=[*ce, ("ce_x y", b"1")]),
        KafkaRecord(value=b"{}", headers=[*ce, ("ce_datacontenttype", "ĀĀ".encode())]),
        KafkaRecord(value=b"[1", headers=[("content-type", b"application/cloudevents+json")]),
        KafkaRecord(
            value=json.dumps(
                {"specversion": "1.0", "id": [1], "source": "/s", "type": "t"}
            ).encode(),
            headers=[("content-type", b"application/cloudevents+json")],
        ),
        KafkaRecord(value=b"x" * (LIMIT + 1)),
        KafkaRecord(
            value=bytes(rng.randrange(256) for _ in range(64)),
            headers=[("content-type", b"application/json")],
        ),
        KafkaRecord(value=b"{}", headers=[("content-type", b"text/plain\r\nx: y")]),
    ]


def test_bad_records_are_dead_lettered_with_their_reason_and_the_stream_goes_on(
    bootstrap: str,
    unique_topic: Callable[[str], str],
    make_sink: Callable[..., Sink],
    run_dispatcher: Callable[[DispatcherConfig], Dispatcher],
) -> None:
    topic, dlq = unique_topic("bad"), unique_topic("bad-dlq")
    rng = random.Random(15)
    bad = bad_records(rng)
    good = 200
    sink = make_sink()
    d = run_dispatcher(
        DispatcherConfig(
            "bad",
            (topic,),
            unique_topic("g"),
            sink.url,
            delivery=Delivery(retry=0, dead_letter_sink=dlq),
            max_record_bytes=LIMIT,
        )
    )
    producer = Producer(bootstrap, linger_ms=5)
    records = [KafkaRecord(value=json.dumps({"n": n}).encode(), key=b"k") for n in range(good)]
    for i, rec in enumerate(bad):  # bad ones spread among the good, on the same partition
        records.insert(
            1 + i * good // len(bad),
            KafkaRecord(rec.value, b"k" if rec.key is None else rec.key, rec.headers),
        )
    for rec in records:
        producer.send(topic, rec, partition=0)
    producer.flush()
    producer.close()

    assert sink.wait_for(lambda evs: len(evs) >= good, 30), (
        f"{len(sink.events)} of {good} delivered"
    )
    got = sorted(json.loads(e["data"])["n"] for e in sink.ok_events())
    assert got == list(range(good))
    dead = read_until(bootstrap, dlq, len(bad))
    reasons = [codec.from_kafka(c.record)["mlfnerror"] for c in dead]
    assert len(reasons) == len(bad), reasons
    assert any("not UTF-8 (bytes ff fe 07)" in r for r in reasons), reasons
    assert d.running and d.error is None
    assert d.stats.snapshot().counters["malformed"] == len(bad)


def test_a_dispatcher_that_stops_is_restarted_and_nothing_is_skipped(
    bootstrap: str,
    unique_topic: Callable[[str], str],
    make_sink: Callable[..., Sink],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = unique_topic("sup")
    sink = make_sink()
    spec = FunctionSpec(
        name=f"sup{uuid.uuid4().hex[:6]}",
        kind="event",
        module="m",
        entrypoint="f",
        sources=(KafkaSource(topics=(topic,)),),
    )
    plane = EventingPlane(Settings(), [spec], lambda _: sink.url, bootstrap=bootstrap)
    failed = []
    real = Dispatcher._update_lag

    def fail_once(self: Dispatcher) -> None:
        if not failed and self._assigned.is_set():
            failed.append(self)
            raise RuntimeError("injected: the dispatcher loop dies")
        real(self)

    monkeypatch.setattr(Dispatcher, "_update_lag", fail_once)
    plane.start(wait_assigned_s=30)
    try:
        first = plane.dispatchers[0]
        wait_until(lambda: not first.running, 10, "the injected failure to stop the dispatcher")
        producer = Producer(bootstrap, linger_ms=5)
        for n in range(50):
            producer.send(topic, KafkaRecord(value=json.dumps({"n": n}).encode()))
        producer.flush()
        producer.close()
        assert sink.wait_for(lambda evs: len(evs) >= 50, 30), "the restarted dispatcher delivers"
        stats = plane.stats()[0]
        assert stats["restarts"] == 1
        assert "injected" in stats["last_error"]
        assert plane.dispatchers[0] is not first and plane.dispatchers[0].running
    finally:
        plane.stop()
