"""The event model users write against, and its HTTP binding.

:class:`CloudEvent` is the ``cloudevents`` SDK's (1.x) event; this module and
:mod:`eventing.codec` (the Kafka binding) are the only ones that import the SDK, so moving
to the 2.x SDK (``cloudevents.core.bindings``) is a change to those two files alone.

Transports see plain values: :class:`HttpMessage` (headers + body). Every decode error is
a :class:`CodecError` (a ``ValueError``) whose message says what was wrong.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudevents import exceptions as ce_errors
from cloudevents.conversion import to_binary, to_structured
from cloudevents.conversion import to_json as _to_json
from cloudevents.http import CloudEvent, from_http

__all__ = [
    "BATCH_CONTENT_TYPE",
    "REQUIRED_ATTRIBUTES",
    "STRUCTURED_CONTENT_TYPE",
    "CloudEvent",
    "CodecError",
    "HttpMessage",
    "as_bytes",
    "attributes",
    "event_data",
    "event_from_dict",
    "event_to_dict",
    "from_http_batch",
    "from_http_message",
    "is_cloudevent_http",
    "new_event",
    "to_http_batch",
    "to_http_binary",
    "to_http_structured",
    "with_attributes",
]

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
REQUIRED_ATTRIBUTES = ("id", "source", "type", "specversion")


class CodecError(ValueError):
    """A message is not a valid CloudEvent in the expected binding."""


@dataclass(frozen=True)
class HttpMessage:
    headers: dict[str, str]
    body: bytes


def new_event(
    type: str, source: str, data: Any = None, *, id: str | None = None, **extensions: Any
) -> CloudEvent:
    """Build a CloudEvent with a fresh id and time; JSON data gets ``application/json``.

    Example:
        >>> ev = new_event("mlfn.features", "/mlfn/preprocess", {"x": [1, 2]})
        >>> ev["type"]
        'mlfn.features'
    """
    attrs: dict[str, Any] = {
        "type": type,
        "source": source,
        "id": id or str(uuid.uuid4()),
        "time": datetime.now(UTC).isoformat(),
    }
    if data is not None and not isinstance(data, bytes | str):
        attrs["datacontenttype"] = "application/json"
    attrs.update(extensions)
    return CloudEvent(attrs, data)


def attributes(event: CloudEvent) -> dict[str, Any]:
    """The event's context attributes and extensions (not its data)."""
    return dict(event.get_attributes())


def event_data(event: CloudEvent) -> Any:
    return event.get_data()


def with_attributes(event: CloudEvent, **attrs: Any) -> CloudEvent:
    """A copy of ``event`` with attributes added or replaced (``None`` removes one)."""
    merged = attributes(event)
    for k, v in attrs.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    return CloudEvent(merged, event.get_data())


def event_to_dict(event: CloudEvent) -> dict[str, Any]:
    """The event as a structured-mode JSON object (data inline or ``data_base64``)."""
    obj: dict[str, Any] = json.loads(_to_json(event))  # encodes bytes data as data_base64
    return obj


def event_from_dict(obj: Mapping[str, Any]) -> CloudEvent:
    if not isinstance(obj, Mapping):
        raise CodecError(f"a CloudEvent must be a JSON object, got {type(obj).__name__}")
    missing = [a for a in REQUIRED_ATTRIBUTES if not obj.get(a)]
    if missing:
        raise CodecError(f"CloudEvent is missing required attribute(s): {', '.join(missing)}")
    try:
        # from_http in structured mode decodes data_base64; from_dict does not.
        return from_http({"content-type": STRUCTURED_CONTENT_TYPE}, json.dumps(dict(obj)))
    except ce_errors.GenericException as err:
        raise CodecError(f"invalid CloudEvent: {err}") from err


# --- HTTP binding -----------------------------------------------------------------


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def is_cloudevent_http(headers: Mapping[str, str]) -> bool:
    h = _lower(headers)
    ctype = h.get("content-type", "").split(";")[0].strip().lower()
    return "ce-specversion" in h or ctype in (STRUCTURED_CONTENT_TYPE, BATCH_CONTENT_TYPE)


def from_http_message(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Decode one CloudEvent sent in binary or structured mode."""
    h = _lower(headers)
    if "ce-specversion" in h:
        missing = [a for a in REQUIRED_ATTRIBUTES if not h.get(f"ce-{a}")]
        if missing:
            raise CodecError(
                "binary-mode CloudEvent is missing header(s): "
                + ", ".join(f"ce-{a}" for a in missing)
            )
    try:
        return from_http(h, body)
    except ce_errors.GenericException as err:
        raise CodecError(f"invalid CloudEvent: {err}") from err


def from_http_batch(body: bytes) -> list[CloudEvent]:
    """Decode an ``application/cloudevents-batch+json`` body (a JSON array of events)."""
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise CodecError(f"batch body is not valid JSON: {err}") from err
    if not isinstance(items, list):
        raise CodecError("a CloudEvents batch must be a JSON array of structured events")
    events = []
    for i, item in enumerate(items):
        try:
            events.append(event_from_dict(item))
        except CodecError as err:
            raise CodecError(f"batch item {i}: {err}") from err
    return events


def to_http_binary(event: CloudEvent) -> HttpMessage:
    headers, body = to_binary(event)
    return HttpMessage(dict(headers), as_bytes(body))


def to_http_structured(event: CloudEvent) -> HttpMessage:
    headers, body = to_structured(event)
    return HttpMessage(dict(headers), as_bytes(body))


def to_http_batch(events: Iterable[CloudEvent]) -> HttpMessage:
    body = json.dumps([event_to_dict(e) for e in events]).encode()
    return HttpMessage({"content-type": BATCH_CONTENT_TYPE}, body)


def as_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    return bytes(body)
