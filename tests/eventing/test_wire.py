"""The hot path's requests are byte for byte those of the general path (eventing.wire).

For any record (random bytes, bad keys, broken CloudEvent headers, huge values: the
fuzzing strategies of test_fuzz_records), :class:`WireEncoder` either gives up (None: the
general path takes the record, and dead-letters it if it must) or gives exactly the bytes
the dispatcher's general path sends: ``_event_of``, then ``to_http_binary`` or
``to_http_batch``, then the request. It must never accept a record the general path
refuses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventing._kafka import Consumed
from eventing.codec import KafkaRecord
from eventing.dispatcher import Dispatcher, DispatcherConfig, _check_sendable
from eventing.fastpath import request_bytes
from eventing.lanes import Lane
from eventing.wire import WireEncoder, _json_ok
from runtime import events
from runtime.spec import EventBatch
from tests.eventing.test_fuzz_records import KEY_TYPES, MAX, header_values, records, values

pytestmark = pytest.mark.unit

SINK = "http://127.0.0.1:8080/in?x=1"
TIME = re.compile(rb"ce-time: [^\r]*\r\n|\"time\": \"[^\"]*\"")
EXTENSIONS = st.sampled_from([(), (("team", "ml"),), (("team", "a b%\u00e9"), ("env", "dev"))])
TIMESTAMPS = st.one_of(
    st.just(1_700_000_000_123), st.integers(-5, 2**63 - 1), st.sampled_from([-1, 0, 999])
)
PLAIN = st.builds(
    KafkaRecord,
    value=values,
    key=st.one_of(st.none(), st.text(max_size=8).map(str.encode)),
    headers=st.lists(
        st.tuples(
            st.one_of(st.text(max_size=12), st.sampled_from(["content-type", "Content-Type"])),
            st.one_of(header_values, st.sampled_from([b"application/json", b"text/plain"])),
        ),
        max_size=4,
    ),
)
"""Records without CloudEvent headers: most of them take the wire."""
BENCH = KafkaRecord(
    value=json.dumps({"pixels": [0] * 64, "label": 3}).encode(),
    key=b"3",
    headers=[("content-type", b"application/json")],
)


@pytest.fixture(scope="module")
def dispatchers() -> Iterator[dict[tuple[object, ...], Dispatcher]]:
    made: dict[tuple[object, ...], Dispatcher] = {}
    yield made
    for d in made.values():
        d._sender.close()


def dispatcher(
    made: dict[tuple[object, ...], Dispatcher],
    key_type: str,
    extensions: tuple[tuple[str, str], ...],
    epoch: str | None,
    batch: bool,
) -> Dispatcher:
    """A dispatcher that is never started: its general path and its encoder."""
    key = (key_type, extensions, epoch, batch)
    if key not in made:
        cfg = DispatcherConfig(
            "src",
            ("raw",),
            "g",
            SINK,
            namespace="ns",
            key_type=key_type,  # type: ignore[arg-type]
            extensions=extensions,
            epoch=epoch,
            max_record_bytes=MAX,
            batch=EventBatch(max_events=10, max_wait_ms=5) if batch else None,
            durable_retries=False,
        )
        made[key] = Dispatcher(cfg, "127.0.0.1:1")
    return made[key]


def general(d: Dispatcher, consumed: list[Consumed]) -> bytes | None:
    """The request the general path sends, or None when it refuses a record."""
    assert d._target is not None
    try:
        evs = [d._event_of(c, d._origin(c)) for c in consumed]
        msg = events.to_http_batch(evs) if d.config.batch else events.to_http_binary(evs[0])
        _check_sendable(msg)
        return request_bytes(d._target, msg)
    except Exception:
        return None


def wire_of(d: Dispatcher) -> WireEncoder:
    assert d._wire is not None, "the encoder is off for a plain KafkaSource"
    return d._wire


def same(fast: bytes, slow: bytes, stamped: bool) -> None:
    if not stamped:  # no usable record timestamp: both stamp the time they ran
        fast, slow = TIME.sub(b"", fast), TIME.sub(b"", slow)
    assert fast == slow


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    record=st.one_of(records, PLAIN),
    key_type=KEY_TYPES,
    extensions=EXTENSIONS,
    epoch=st.sampled_from([None, "18c2f"]),
    ts=TIMESTAMPS,
    batch=st.booleans(),
)
@example(record=BENCH, key_type="string", extensions=(), epoch=None, ts=1, batch=False)
@example(  # far enough for the float the general path goes through to round
    record=BENCH, key_type="string", extensions=(), epoch=None, ts=50_852_754_776_279, batch=False
)
@example(
    record=KafkaRecord(value=b'{"a": [' + b"[" * 450 + b"]" * 450 + b"]}", headers=BENCH.headers),
    key_type="string",
    extensions=(),
    epoch=None,
    ts=1,
    batch=True,
)
def test_the_wire_sends_what_the_general_path_sends_or_gives_up(
    dispatchers: dict[tuple[object, ...], Dispatcher],
    record: KafkaRecord,
    key_type: str,
    extensions: tuple[tuple[str, str], ...],
    epoch: str | None,
    ts: int,
    batch: bool,
) -> None:
    d = dispatcher(dispatchers, key_type, extensions, epoch, batch)
    wire = wire_of(d)
    consumed = [Consumed("raw", 3, 41 + i, ts, record) for i in range(2 if batch else 1)]
    fast = wire.batch(consumed) if batch else wire.request(consumed[0])
    if fast is None:
        return  # the general path takes it, as before
    slow = general(d, consumed)
    assert slow is not None, "the wire accepted a record the general path refuses"
    same(fast, slow, stamped=0 <= ts < 253402300800000)


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize(
    "record",
    [
        BENCH,
        KafkaRecord(value=b"plain text", key=None, headers=[("X-Trace", b"t\xff1")]),
        KafkaRecord(value=None, key="\u00e9t\u00e9".encode()),
        KafkaRecord(value=b"{}", headers=[("content-type", b"Application/JSON; charset=utf-8")]),
    ],
)
def test_common_records_take_the_wire(
    dispatchers: dict[tuple[object, ...], Dispatcher], record: KafkaRecord, batch: bool
) -> None:
    """The hot path is taken for ordinary records (else the test above proves nothing)."""
    d = dispatcher(dispatchers, "string", (("team", "ml"),), "18c2f", batch)
    consumed = [Consumed("raw", 0, 7 + i, 1_700_000_000_123, record) for i in range(3)]
    fast = wire_of(d).batch(consumed) if batch else wire_of(d).request(consumed[0])
    assert fast is not None
    slow = general(d, consumed if batch else consumed[:1])
    assert slow is not None
    assert fast == slow


@pytest.mark.parametrize(
    "record",
    [
        KafkaRecord(value=b"{", headers=[("content-type", b"application/json")]),
        KafkaRecord(value=b"NaN", headers=[("content-type", b"application/json")]),
        KafkaRecord(value=b"{}", key=b"\xff"),
        KafkaRecord(value=b"x" * (MAX + 1)),
        KafkaRecord(value=b"{}", headers=[("ce_specversion", b"1.0")]),
        KafkaRecord(value=b"{}", headers=[("content-type", b"application/cloudevents+json")]),
        KafkaRecord(value=b"{}", headers=[("mlfn-origin", b"a1/0/41")]),
        KafkaRecord(value=b"{}", headers=[("content-type", b"text/\x01")]),
    ],
)
def test_records_the_general_path_must_judge_leave_the_wire(
    dispatchers: dict[tuple[object, ...], Dispatcher], record: KafkaRecord
) -> None:
    d = dispatcher(dispatchers, "string", (), None, False)
    assert wire_of(d).request(Consumed("raw", 0, 7, 1_700_000_000_123, record)) is None


def test_a_record_the_wire_cannot_read_takes_the_general_path_without_a_crash(
    dispatchers: dict[tuple[object, ...], Dispatcher],
) -> None:
    """A header without a value (Kafka allows null): the general path dead-letters it."""
    d = dispatcher(dispatchers, "string", (), None, False)
    c = Consumed("raw", 0, 7, 1, KafkaRecord(value=b"{}", headers=[("h", None)]))  # type: ignore[list-item]
    assert d._first_attempt(Lane(("raw", 0), 1), [c]) is None  # to the threads, which say why
    assert general(d, [c]) is None


def test_an_extension_that_replaces_a_wrapped_attribute_turns_the_wire_off(
    dispatchers: dict[tuple[object, ...], Dispatcher],
) -> None:
    assert dispatcher(dispatchers, "string", (("source", "x"),), None, False)._wire is None
    assert dispatcher(dispatchers, "string", (("Team", "x"),), None, False)._wire is None


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode)))
@example(value=b"[" * 1000 + b"]" * 1000)
@example(value=b"1" * 5000)
def test_json_the_wire_accepts_is_json_the_general_path_accepts(value: bytes) -> None:
    if _json_ok(value):
        json.loads(value)
