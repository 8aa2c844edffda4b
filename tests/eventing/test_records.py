"""Record -> CloudEvent conversion (Knative's KafkaSource wrapping) and dead-letter attributes."""

from __future__ import annotations

import base64
import json

import pytest

from eventing import codec
from eventing.codec import KafkaRecord
from eventing.errors import MalformedRecordError
from eventing.records import RecordOrigin, dead_letter_event, record_to_event, wrap_record
from runtime import events

pytestmark = pytest.mark.unit

ORIGIN = RecordOrigin("ns1", "src", "digits.raw", 2, 41, 1_700_000_000_123)


def test_plain_record_is_wrapped_as_knative_does() -> None:
    rec = KafkaRecord(
        value=b'{"x": 1}',
        key=b"user-7",
        headers=[("content-type", b"application/json"), ("X-Trace_Id", b"abc")],
    )
    ev = record_to_event(rec, ORIGIN, max_bytes=100)
    attrs = events.attributes(ev)
    assert attrs["type"] == "dev.knative.kafka.event"
    assert attrs["source"] == "/apis/v1/namespaces/ns1/kafkasources/src#digits.raw"
    assert attrs["id"] == "partition:2/offset:41"
    assert attrs["subject"] == "partition:2#41"
    assert attrs["key"] == attrs["partitionkey"] == "user-7"
    assert attrs["kafkaheaderxtraceid"] == "abc"
    assert attrs["kafkaheadercontenttype"] == "application/json"
    assert attrs["datacontenttype"] == "application/json"
    assert attrs["time"] == "2023-11-14T22:13:20.123Z"
    msg = events.to_http_binary(ev)
    assert msg.body == b'{"x": 1}'  # the value is passed unchanged


def test_record_without_key_has_no_key_extensions() -> None:
    attrs = events.attributes(wrap_record(KafkaRecord(value=b"raw"), ORIGIN))
    assert "key" not in attrs and "partitionkey" not in attrs
    assert "datacontenttype" not in attrs


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_cloudevent_records_pass_through(mode: str) -> None:
    ev = events.new_event("mlfn.x", "/p", {"a": 1}, id="e1", myext="v")
    rec = codec.to_kafka_binary(ev) if mode == "binary" else codec.to_kafka_structured(ev)
    out = record_to_event(rec, ORIGIN, max_bytes=1000)
    assert out["id"] == "e1" and out["type"] == "mlfn.x" and out["myext"] == "v"
    assert events.event_data(out) == {"a": 1}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (KafkaRecord(value=b"x" * 101), "101 bytes, above the limit of 100"),
        (
            KafkaRecord(value=b"{nope", headers=[("content-type", b"application/json")]),
            "is not valid JSON",
        ),
        (
            KafkaRecord(value=b"{}", headers=[("ce_specversion", b"1.0"), ("ce_type", b"t")]),
            "missing header(s): ce_id, ce_source",
        ),
        (
            KafkaRecord(value=b"[1", headers=[("content-type", b"application/cloudevents+json")]),
            "not valid JSON",
        ),
    ],
)
def test_malformed_records_raise_with_reason(record: KafkaRecord, reason: str) -> None:
    with pytest.raises(MalformedRecordError) as err:
        record_to_event(record, ORIGIN, max_bytes=100)
    assert reason in err.value.reason


def test_broker_topics_accept_cloudevents_only() -> None:
    with pytest.raises(MalformedRecordError, match="accepts CloudEvents only"):
        record_to_event(KafkaRecord(value=b"{}"), ORIGIN, max_bytes=100, wrap=False)


def test_dead_letter_extensions() -> None:
    ev = events.new_event("t", "/s", {"a": 1}, id="1")
    body = b"e" * 2000
    out = dead_letter_event(ev, dest="http://sink/", code=500, data=body)
    assert out["knativeerrordest"] == "http://sink/"
    assert out["knativeerrorcode"] == "500"
    assert base64.b64decode(out["knativeerrordata"]) == body[:1024]
    bare = dead_letter_event(ev, dest="http://sink/", code=None, data=b"")
    assert "knativeerrorcode" not in events.attributes(bare)
    assert json.loads(events.to_http_binary(bare).body) == {"a": 1}
