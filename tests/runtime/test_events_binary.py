"""The HTTP binding's fast paths give what the CloudEvents SDK gives (binary, batch)."""

from __future__ import annotations

from typing import Any

import pytest
from cloudevents.http import from_http

from runtime import events as codec

pytestmark = pytest.mark.unit

BASE = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}

CASES: list[tuple[dict[str, str], bytes]] = [
    ({**BASE, "Content-Type": "application/json"}, b'{"a": [1, 2]}'),
    ({**BASE, "content-type": "text/plain"}, b"not json"),
    (BASE, b""),
    ({**BASE, "Content-Type": "application/json"}, b'""'),
    ({**BASE, "ce-time": "2024-01-01T00:00:00Z", "ce-subject": "x", "ce-myext": "e"}, b"1"),
    ({**BASE, "CE-Partitionkey": "k", "ce-datacontenttype": "application/json"}, b"[1]"),
    ({**BASE, "Content-Type": "application/octet-stream"}, b"\xff\xfe\x00"),
]


@pytest.mark.parametrize(("headers", "body"), CASES)
def test_same_event_as_the_sdk(headers: dict[str, str], body: bytes) -> None:
    ours = codec.from_http_message(headers, body)
    sdk = from_http(headers, body)
    if "ce-time" not in {k.lower() for k in headers}:  # both stamp "now"
        sdk["time"] = ours["time"]
    assert codec.attributes(ours) == codec.attributes(sdk)
    assert ours.get_data() == sdk.get_data()


ENCODE: list[tuple[dict[str, Any], Any]] = [
    ({"datacontenttype": "application/json"}, {"a": [1, 2.5, None]}),
    ({}, None),
    ({"subject": "s", "myext": 7, "partitionkey": "k"}, "text data"),
    ({"datacontenttype": "application/octet-stream"}, b"\xff\x00raw"),
    ({"time": "2024-01-01T00:00:00Z"}, [1, 2]),
]


@pytest.mark.parametrize(("extra", "data"), ENCODE)
def test_binary_encoding_matches_the_sdk(extra: dict[str, Any], data: Any) -> None:
    from cloudevents.conversion import to_binary

    ev = codec.CloudEvent({"id": "1", "source": "/s", "type": "t", **extra}, data)
    ours = codec.to_http_binary(ev)
    headers, body = to_binary(ev)
    assert ours.headers == dict(headers)
    assert ours.body == (body.encode() if isinstance(body, str) else bytes(body or b""))


@pytest.mark.parametrize(("extra", "data"), ENCODE)
def test_batch_encoding_matches_the_sdk(extra: dict[str, Any], data: Any) -> None:
    import json

    ev = codec.CloudEvent({"id": "1", "source": "/s", "type": "t", **extra}, data)
    assert json.loads(codec.to_http_batch([ev, ev]).body) == [codec.event_to_dict(ev)] * 2


STRUCTURED: list[dict[str, Any]] = [
    {"data": {"features": [0.5] * 3, "label": 1}, "datacontenttype": "application/json"},
    {},
    {"data": None},
    {"data": ""},
    {"data": "text", "datacontenttype": "text/plain", "subject": "s", "myext": "e"},
    {"data": [1, 2], "time": "2024-01-01T00:00:00Z", "partitionkey": "k"},
    {"data_base64": "/wA=", "datacontenttype": "application/octet-stream"},  # the SDK's path
    {"data": 1, "myext": 7},  # a non-string attribute: the SDK's path
]


@pytest.mark.parametrize("extra", STRUCTURED)
def test_batch_items_decode_as_the_sdk_decodes_them(extra: dict[str, Any]) -> None:
    """A batch item (structured mode) gives the event the SDK's from_http gives."""
    import json

    obj = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", **extra}
    [ours] = codec.from_http_batch(json.dumps([obj]).encode())
    sdk = from_http({"content-type": codec.STRUCTURED_CONTENT_TYPE}, json.dumps(obj))
    if "time" not in obj:  # both stamp "now"
        sdk["time"] = ours["time"]
    assert codec.attributes(ours) == codec.attributes(sdk)
    assert ours.get_data() == sdk.get_data()
    assert type(ours.get_data()) is type(sdk.get_data())
