"""A trigger judges binary-mode CloudEvent records from their ``ce_*`` headers alone.

:func:`eventing.wire.binary_attributes` must give exactly the attributes the filter sees
on the full event (``Dispatcher._event_of``), or give up (None: the general path takes
the record, and dead-letters it if it must); it must never accept a record the general
path refuses. So the header-based filter result equals the full-event one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventing._kafka import Consumed
from eventing.codec import KafkaRecord
from eventing.dispatcher import Dispatcher, DispatcherConfig
from eventing.filters import Predicate, compile_filter
from eventing.lanes import Lane
from eventing.wire import _json_ok, binary_attributes
from runtime import events
from tests.eventing.test_fuzz_records import MAX, records
from tests.eventing.test_wire import TIME, general

pytestmark = pytest.mark.unit

NAMES = ["type", "source", "subject", "id", "time", "team", "partitionkey", "knativekafkaoffset"]
TEXTS = ["mlfn.model.published", "mlfn.", ".published", "/p", "m1", "3", "ml", "a b%\u00e9", "x"]
leaf = st.builds(
    lambda kind, pairs: {kind: pairs},
    st.sampled_from(["exact", "prefix", "suffix"]),
    st.dictionaries(st.sampled_from(NAMES), st.sampled_from(TEXTS), min_size=1, max_size=2),
)
expressions = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=6,
)
filters = st.lists(expressions, max_size=3)
EXTENSIONS = st.sampled_from([(), (("team", "ml"),), (("team", "a b%\u00e9"), ("subject", "m1"))])
attribute_sets = st.fixed_dictionaries(
    {
        "type": st.sampled_from([*TEXTS[:3], "mlfn.features"]),
        "source": st.sampled_from(["/p", "/apis/v1/x", "\u00e9"]),
        "id": st.sampled_from(["1", "m1", "partition:0/offset:3"]),
    },
    optional={
        "subject": st.sampled_from(TEXTS),
        "time": st.just("2026-01-01T00:00:00Z"),
        "team": st.sampled_from(TEXTS),
        "knativekafkaoffset": st.just("99"),
        "dataschema": st.text(max_size=6),
        "partitionkey": st.sampled_from(["k", "3"]),
    },
)
"""Valid binary-mode events: every one of them must be judged from its headers."""


def binary_record(attrs: dict[str, str], value: bytes | None, key: bytes | None) -> KafkaRecord:
    headers = [("ce_specversion", b"1.0")]
    headers += [(f"ce_{k}", v.encode()) for k, v in attrs.items()]
    headers.append(("content-type", b"application/json"))
    return KafkaRecord(value=value, key=key, headers=headers)


@pytest.fixture(scope="module")
def made() -> Iterator[dict[object, Dispatcher]]:
    out: dict[object, Dispatcher] = {}
    yield out
    for d in out.values():
        d._sender.close()


def trigger(
    made: dict[object, Dispatcher], extensions: tuple[tuple[str, str], ...], match: Predicate
) -> Dispatcher:
    """A trigger dispatcher that is never started (the filter is swapped per example)."""
    if extensions not in made:
        cfg = DispatcherConfig(
            "tr",
            ("broker",),
            "g",
            "http://127.0.0.1:8080/",
            kind="trigger",
            extensions=extensions,
            max_record_bytes=MAX,
            filter=lambda a: True,
            durable_retries=False,
        )
        made[extensions] = Dispatcher(cfg, "127.0.0.1:1")
    d = made[extensions]
    object.__setattr__(d.config, "filter", match)
    if d._wire is not None:
        d._wire._filter = match
    return d


def full_event_attributes(d: Dispatcher, c: Consumed) -> dict[str, Any] | None:
    try:
        return events.attributes(d._event_of(c, d._origin(c)))
    except Exception:
        return None


def compare(
    d: Dispatcher, c: Consumed, match: Predicate, *, judged: bool
) -> tuple[dict[str, str] | None, dict[str, Any] | None]:
    fast = binary_attributes(
        c.record, c.partition, c.offset, max_bytes=MAX, extensions=d.config.extensions
    )
    slow = full_event_attributes(d, c)
    if judged:
        assert fast is not None, "a valid binary-mode record was not judged from its headers"
    if fast is None:
        return fast, slow
    assert slow is not None, "the headers judged a record the general path refuses"
    if not any(k.lower() == "ce_time" for k, _ in c.record.headers):
        assert fast.pop("time") and slow.pop("time")  # both stamp the time they ran
    assert list(fast.items()) == list(slow.items())  # the same attributes, in the same order
    assert match(fast) == match(slow)
    return fast, slow


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records, extensions=EXTENSIONS, spec=filters)
def test_headers_give_the_attributes_of_the_full_event_or_give_up(
    made: dict[object, Dispatcher],
    record: KafkaRecord,
    extensions: tuple[tuple[str, str], ...],
    spec: list[dict[str, Any]],
) -> None:
    match = compile_filter(spec)
    d = trigger(made, extensions, match)
    compare(d, Consumed("broker", 2, 17, 1_700_000_000_123, record), match, judged=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attrs=attribute_sets,
    extensions=EXTENSIONS,
    spec=filters,
    value=st.sampled_from([None, b"", b"{}", b'{"n": [1, 2]}']),
    key=st.one_of(st.none(), st.sampled_from([b"k", "\u00e9".encode()])),
)
@example(
    attrs={"type": "mlfn.model.published", "source": "/p", "id": "1", "subject": "m1"},
    extensions=(),
    spec=[{"exact": {"type": "mlfn.model.published", "subject": "m1"}}],
    value=b"{}",
    key=None,
)
def test_the_header_filter_is_the_full_event_filter(
    made: dict[object, Dispatcher],
    attrs: dict[str, str],
    extensions: tuple[tuple[str, str], ...],
    spec: list[dict[str, Any]],
    value: bytes | None,
    key: bytes | None,
) -> None:
    match = compile_filter(spec)
    d = trigger(made, extensions, match)
    c = Consumed("broker", 0, 99, 1_700_000_000_123, binary_record(attrs, value, key))
    compare(d, c, match, judged=True)


@pytest.mark.parametrize(
    "headers",
    [
        [("ce_specversion", b"1.0"), ("ce_source", b"/p"), ("ce_type", b"t")],  # no id
        [("ce_specversion", b"1.0"), ("ce_id", b""), ("ce_source", b"/p"), ("ce_type", b"t")],
        [("ce_specversion", b"0.3"), ("ce_id", b"1"), ("ce_source", b"/p"), ("ce_type", b"t")],
        [("ce_specversion", b"1.0"), ("ce_id", b"\xff"), ("ce_source", b"/p"), ("ce_type", b"t")],
        [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/p"), ("ce_Ty-pe", b"t")],
        [("content-type", b"application/cloudevents+json"), ("ce_specversion", b"1.0")],
        [
            *[("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/p")],
            *[("ce_type", b"t"), ("content-type", b"text/plain")],
            ("ce_datacontenttype", b"text/html"),
        ],
        [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/p"), ("ce_type", None)],
    ],
)
def test_unusual_records_are_left_to_the_general_path(
    made: dict[object, Dispatcher], headers: list[tuple[str, bytes]]
) -> None:
    """So they are dead-lettered (or delivered) with their reason exactly as before."""
    d = trigger(made, (), compile_filter([{"exact": {"type": "never"}}]))
    c = Consumed("broker", 0, 1, 1, KafkaRecord(value=b"{}", headers=headers))
    assert not d._filtered_by_headers(c)


@pytest.mark.parametrize(
    ("value", "key"), [(b"{", None), (b"NaN", None), (b"x" * (MAX + 1), None), (b"{}", b"\xff")]
)
def test_a_bad_value_or_key_is_judged_by_the_general_path(
    made: dict[object, Dispatcher], value: bytes, key: bytes | None
) -> None:
    d = trigger(made, (), compile_filter([{"exact": {"type": "never"}}]))
    rec = binary_record({"type": "t", "source": "/p", "id": "1"}, value, key)
    assert not d._filtered_by_headers(Consumed("broker", 0, 1, 1, rec))


def test_a_filtered_record_is_counted_and_never_becomes_an_event(
    made: dict[object, Dispatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = trigger(made, (), compile_filter([{"exact": {"type": "mlfn.model.published"}}]))
    rec = binary_record({"type": "mlfn.features", "source": "/p", "id": "1"}, b"{}", b"k")

    def no_event(*args: object) -> None:
        raise AssertionError("the event was built")

    monkeypatch.setattr(d, "_event_of", no_event)
    lane = Lane(("broker", 0), 1)
    c = Consumed("broker", 0, 5, 1, rec)
    before = d.stats.count("filtered")
    assert d._first_attempt(lane, [c]) is None  # to the threads, which count it
    assert d._process(lane, [c]) is True
    assert d.stats.count("filtered") == before + 1


def sent(d: Dispatcher, c: Consumed) -> tuple[bytes | None, bytes | None]:
    """(the wire's request, the general path's) of ``c``, the time cut out when the
    record has none (both stamp the time they ran)."""
    assert d._wire is not None, "the trigger's wire is off"
    fast, slow = d._wire.request(c), general(d, [c])
    if not any(k.lower() == "ce_time" for k, _ in c.record.headers):
        fast = None if fast is None else TIME.sub(b"", fast)
        slow = None if slow is None else TIME.sub(b"", slow)
    return fast, slow


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records, extensions=EXTENSIONS, spec=filters)
def test_the_trigger_wire_sends_what_the_general_path_sends_or_gives_up(
    made: dict[object, Dispatcher],
    record: KafkaRecord,
    extensions: tuple[tuple[str, str], ...],
    spec: list[dict[str, Any]],
) -> None:
    d = trigger(made, extensions, compile_filter(spec))
    fast, slow = sent(d, Consumed("broker", 2, 17, 1_700_000_000_123, record))
    if fast is not None:
        assert slow is not None, "the wire accepted a record the general path refuses"
        assert fast == slow


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attrs=attribute_sets,
    extensions=EXTENSIONS,
    value=st.one_of(
        st.sampled_from([None, b"", b"null", b"{}", b'{ "n" : [1, 2.50, "\\u00e9"] }']),
        st.binary(max_size=20),
    ),
    ctype=st.sampled_from([None, b"application/json", b"text/plain", b"Application/JSON; x=1"]),
    key=st.one_of(st.none(), st.sampled_from([b"k", "\u00e9".encode()])),
)
def test_events_the_filter_passes_take_the_trigger_wire(
    made: dict[object, Dispatcher],
    attrs: dict[str, str],
    extensions: tuple[tuple[str, str], ...],
    value: bytes | None,
    ctype: bytes | None,
    key: bytes | None,
) -> None:
    """Valid events take the wire (else the test above proves nothing), byte for byte."""
    d = trigger(made, extensions, compile_filter([]))
    rec = binary_record(attrs, value, key)
    headers = [h for h in rec.headers if h[0] != "content-type"]
    if ctype is not None:
        headers.append(("content-type", ctype))
    c = Consumed("broker", 0, 99, 1, KafkaRecord(value=value, key=key, headers=headers))
    fast, slow = sent(d, c)
    if not (value and ctype and b"json" in ctype.lower()) or _json_ok(value):
        assert fast is not None
    if fast is not None:
        assert fast == slow


def test_a_dropped_record_never_takes_the_wire(made: dict[object, Dispatcher]) -> None:
    d = trigger(made, (), compile_filter([{"exact": {"type": "mlfn.model.published"}}]))
    rec = binary_record({"type": "mlfn.features", "source": "/p", "id": "1"}, b"{}", None)
    assert d._wire is not None
    assert d._wire.request(Consumed("broker", 0, 5, 1, rec)) is None


@pytest.mark.parametrize("name", ["ce_data", "ce_extensions"])
def test_attributes_the_sdk_encodes_its_own_way_leave_the_wire(
    made: dict[object, Dispatcher], name: str
) -> None:
    """The SDK drops ``data`` and refuses ``extensions``: the general path decides."""
    d = trigger(made, (), compile_filter([]))
    rec = binary_record({"type": "t", "source": "/p", "id": "1"}, b"{}", None)
    c = Consumed("broker", 0, 5, 1, KafkaRecord(rec.value, None, [*rec.headers, (name, b"x")]))
    assert d._wire is not None
    assert d._wire.request(c) is None
