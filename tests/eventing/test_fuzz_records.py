"""Fuzzing the record -> event -> request path with hypothesis: random bytes, bad keys,
broken CloudEvent headers, huge values.

What a dispatcher does with one record is: :func:`record_to_event`, then (unbatched)
``events.to_http_binary`` and the request. The properties: a record either becomes an
event whose request http.client accepts as it is, or raises
:class:`MalformedRecordError` with a reason (then it is dead-lettered as
:func:`raw_event`, which must itself always be sendable, over HTTP and to Kafka).
Nothing else may escape: any other exception would once have stopped the dispatcher.
"""

from __future__ import annotations

import http.client
import json
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventing import codec
from eventing.codec import KafkaRecord
from eventing.errors import MalformedRecordError
from eventing.records import ORIGIN_HEADER, RecordOrigin, raw_event, record_to_event
from runtime import events

pytestmark = pytest.mark.unit

ORIGIN = RecordOrigin("ns", "src", "raw", 1, 7, 1_700_000_000_000, "18c2f")
MAX = 4096
KEY_TYPES = st.sampled_from(["string", "int", "float", "byte-array"])
CE_ATTRS = ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "x"]

header_names = st.one_of(
    st.sampled_from([f"ce_{a}" for a in CE_ATTRS] + ["content-type", ORIGIN_HEADER]),
    st.text(max_size=12),
    st.text(max_size=8).map(lambda t: "ce_" + t),
)
header_values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"1.0",
            b"0.3",
            b"application/json",
            b"application/cloudevents+json",
            b"text/plain; charset=\xff",
            b"2023-01-01T00:00:00Z",
            b"not a time",
            b"a/1/2",
        ]
    ),
    st.text(max_size=20).map(str.encode),
)
values = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.sampled_from([b"{}", b'{"n": 1}', b"[1", b"\xff\xfe", b"x" * (MAX + 1)]),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(
        lambda d: json.dumps(d).encode()
    ),
)
keys = st.one_of(
    st.none(),
    st.binary(max_size=12),
    st.just(b"\xff\xfe\x07"),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: struct.pack(">q", i)),
    st.floats().map(lambda f: struct.pack(">d", f)),
    st.text(max_size=8).map(str.encode),
)
random_headers = st.lists(st.tuples(header_names, header_values), max_size=6)
binary_events = st.tuples(
    st.tuples(st.just("ce_specversion"), st.sampled_from([b"1.0", b"0.3", b"2", b"\xff"])),
    st.tuples(st.just("ce_id"), header_values),
    st.tuples(st.just("ce_source"), header_values),
    st.tuples(st.just("ce_type"), header_values),
    random_headers,
).map(lambda t: [*t[:4], *t[4]])
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
structured_events = st.fixed_dictionaries(
    {"specversion": st.sampled_from(["1.0", "0.3", 1]), "id": json_values, "source": json_values},
    optional={
        "type": json_values,
        "data": json_values,
        "data_base64": st.text(max_size=8),
        "datacontenttype": json_values,
    },
).flatmap(
    lambda env: st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(
        lambda extra: json.dumps({**extra, **env}).encode()
    )
)
records = st.one_of(
    st.builds(
        KafkaRecord,
        value=values,
        key=keys,
        headers=st.one_of(random_headers, binary_events),
    ),
    st.builds(
        KafkaRecord,
        value=structured_events,
        key=keys,
        headers=st.just([("content-type", b"application/cloudevents+json")]),
    ),
)


def sendable(msg: events.HttpMessage) -> None:
    """What http.client checks in putheader, which raised inside the dispatcher before."""
    for name, value in msg.headers.items():
        assert http.client._is_legal_header_name(name.encode("ascii")), name  # type: ignore[attr-defined]
        raw = value.encode("latin-1")
        assert not http.client._is_illegal_header_value(raw), (name, value)  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records, key_type=KEY_TYPES, wrap=st.booleans())
@example(record=KafkaRecord(value=b'{"n": 1}', key=b"\xff\xfe\x07"), key_type="string", wrap=True)
@example(record=KafkaRecord(value=b"{}", key="€".encode()), key_type="string", wrap=True)
@example(
    record=KafkaRecord(value=b"{}", headers=[("ce_specversion", b"1.0"), ("ce_id", b"\xff")]),
    key_type="string",
    wrap=True,
)
def test_a_record_becomes_a_sendable_event_or_a_reasoned_dead_letter(
    record: KafkaRecord, key_type: str, wrap: bool
) -> None:
    try:
        ev = record_to_event(record, ORIGIN, max_bytes=MAX, wrap=wrap, key_type=key_type)  # type: ignore[arg-type]
    except MalformedRecordError as err:
        assert err.reason
        dead = raw_event(record, ORIGIN, err.reason)
        sendable(events.to_http_binary(dead))
        codec.to_kafka_binary(dead)
        return
    sendable(events.to_http_binary(ev))
    events.to_http_batch([ev])
    codec.to_kafka_binary(ev)


@settings(max_examples=100, deadline=None)
@given(key=st.text(min_size=1, max_size=30), subject=st.text(max_size=30))
def test_text_attributes_survive_the_http_binding(key: str, subject: str) -> None:
    """Any UTF-8 key (and any text attribute) comes out of an HTTP request as it went in."""
    rec = KafkaRecord(value=b"{}", key=key.encode())
    ev = record_to_event(rec, ORIGIN, max_bytes=MAX)
    if subject:
        ev["subject"] = subject
    msg = events.to_http_binary(ev)
    sendable(msg)
    back = events.from_http_message(msg.headers, msg.body)
    assert back["key"] == key
    assert back["subject"] == (subject or ev["subject"])


@pytest.mark.parametrize(
    ("key", "key_type", "expected"),
    [
        (b"user-7", "string", "user-7"),
        ((-3).to_bytes(4, "big", signed=True), "int", "-3"),
        ((2**40).to_bytes(8, "big", signed=True), "int", str(2**40)),
        (struct.pack(">f", 1.5), "float", "1.5"),
        (struct.pack(">d", -0.25), "float", "-0.25"),
        (b"\xff\xfe\x07", "byte-array", "//4H"),
    ],
)
def test_key_types_follow_knative(key: bytes, key_type: str, expected: str) -> None:
    ev = record_to_event(
        KafkaRecord(value=b"{}", key=key), ORIGIN, max_bytes=MAX, key_type=key_type
    )  # type: ignore[arg-type]
    assert ev["key"] == ev["partitionkey"] == expected


@pytest.mark.parametrize(
    ("key", "key_type", "reason"),
    [
        (b"\xff\xfe\x07", "string", "not UTF-8 (bytes ff fe 07)"),
        (b"abc", "int", "must be 4 or 8 bytes"),
        (b"abcdefghi", "float", "must be 4 or 8 bytes"),
    ],
)
def test_keys_that_do_not_decode_are_malformed_with_the_fix(
    key: bytes, key_type: str, reason: str
) -> None:
    with pytest.raises(MalformedRecordError) as err:
        record_to_event(KafkaRecord(value=b"{}", key=key), ORIGIN, max_bytes=MAX, key_type=key_type)  # type: ignore[arg-type]
    assert reason in err.value.reason and "byte-array" in err.value.reason
    dead = raw_event(KafkaRecord(value=b"{}", key=key), ORIGIN, err.value.reason)
    assert dead["key"] == events.attributes(dead)["partitionkey"]  # base64, intact


def test_ids_carry_the_broker_epoch_and_a_replayed_record_keeps_its_first_id() -> None:
    ev = record_to_event(KafkaRecord(value=b"{}"), ORIGIN, max_bytes=MAX)
    assert ev["id"] == "partition:1/offset:7/epoch:18c2f"
    plain = RecordOrigin("ns", "src", "raw", 1, 7)
    assert record_to_event(KafkaRecord(value=b"{}"), plain, max_bytes=MAX)["id"] == (
        "partition:1/offset:7"
    )
    replayed = KafkaRecord(value=b"{}", headers=[(ORIGIN_HEADER, b"a1/0/41")])
    ev = record_to_event(replayed, ORIGIN, max_bytes=MAX)
    assert ev["id"] == "partition:0/offset:41/epoch:a1" and ev["subject"] == "partition:0#41"
    assert not any(k.startswith("kafkaheadermlfn") for k in events.attributes(ev))
