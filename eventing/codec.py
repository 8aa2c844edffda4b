"""The Kafka binding of CloudEvents: records <-> :class:`~runtime.events.CloudEvent`.

The event model and its HTTP binding are in :mod:`runtime.events`; this module adds the
Kafka protocol binding (``cloudevents.kafka``). Transports see plain values:
:class:`KafkaRecord` (headers + key + value). Decode errors are
:class:`~runtime.events.CodecError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudevents import exceptions as ce_errors
from cloudevents import kafka as ce_kafka

from runtime.events import (
    REQUIRED_ATTRIBUTES,
    STRUCTURED_CONTENT_TYPE,
    CloudEvent,
    CodecError,
    as_bytes,
    event_from_dict,
    event_to_dict,
    with_attributes,
)

__all__ = [
    "KafkaRecord",
    "from_kafka",
    "is_cloudevent_kafka",
    "to_kafka_binary",
    "to_kafka_structured",
]


@dataclass(frozen=True)
class KafkaRecord:
    """A Kafka record as transports see it; header values are bytes."""

    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


# --- Kafka binding ----------------------------------------------------------------


def _key_of(event: CloudEvent) -> bytes | str | None:
    key = event.get("partitionkey")
    return None if key is None else str(key)


def is_cloudevent_kafka(headers: Iterable[tuple[str, bytes]]) -> bool:
    for name, value in headers:
        n = name.lower()
        if n == "ce_specversion":
            return True
        if (
            n == "content-type"
            and value.split(b";")[0].strip().lower() == STRUCTURED_CONTENT_TYPE.encode()
        ):
            return True
    return False


def to_kafka_binary(event: CloudEvent, key: bytes | str | None = None) -> KafkaRecord:
    """Encode in the Kafka binding's binary mode (``ce_*`` headers, data as value)."""
    if event.get("datacontenttype") is None:  # the 1.x SDK's kafka.to_binary requires it
        data = event.get_data()
        ctype = "application/octet-stream" if isinstance(data, bytes) else "application/json"
        event = with_attributes(
            event, datacontenttype="text/plain" if isinstance(data, str) else ctype
        )
    msg = ce_kafka.to_binary(
        event, data_marshaller=_marshal, key_mapper=lambda e: key or _key_of(e)
    )
    return _record(msg)


def to_kafka_structured(event: CloudEvent, key: bytes | str | None = None) -> KafkaRecord:
    """Encode in structured mode: the whole event as JSON, ``application/cloudevents+json``."""
    # The 1.x SDK's kafka.to_structured moves datacontenttype into the content-type header,
    # which breaks the binding spec; the envelope comes from the SDK's own to_dict instead.
    k = key or _key_of(event)
    value = json.dumps(event_to_dict(event)).encode()
    return KafkaRecord(
        value=value,
        key=k.encode() if isinstance(k, str) else k,
        headers=[("content-type", STRUCTURED_CONTENT_TYPE.encode())],
    )


def from_kafka(record: KafkaRecord) -> CloudEvent:
    """Decode a record in binary or structured mode; raise CodecError otherwise."""
    headers: dict[str, bytes] = {}
    for name, value in record.headers:
        headers[name.lower()] = value
    try:
        msg = ce_kafka.KafkaMessage(headers=headers, key=record.key, value=record.value or b"")
        if "ce_specversion" in headers:
            missing = [a for a in REQUIRED_ATTRIBUTES if not headers.get(f"ce_{a}")]
            if missing:
                raise CodecError(
                    "binary-mode CloudEvent record is missing header(s): "
                    + ", ".join(f"ce_{a}" for a in missing)
                )
            return _text_key(ce_kafka.from_binary(msg, data_unmarshaller=_unmarshal(headers)))
        if is_cloudevent_kafka(record.headers):
            try:
                envelope = json.loads(record.value or b"")
            except ValueError as err:
                raise CodecError(f"structured CloudEvent record is not valid JSON: {err}") from err
            event = event_from_dict(envelope)
            if record.key is not None and event.get("partitionkey") is None:
                event["partitionkey"] = record.key.decode("utf-8", "replace")
            return event
    except ce_errors.GenericException as err:
        raise CodecError(f"invalid CloudEvent record: {err}") from err
    except UnicodeDecodeError as err:
        raise CodecError(f"CloudEvent headers are not UTF-8: {err}") from err
    raise CodecError("record carries no CloudEvent (no ce_specversion header, not structured mode)")


def _text_key(event: CloudEvent) -> CloudEvent:
    key = event.get("partitionkey")
    if isinstance(key, bytes):
        event["partitionkey"] = key.decode("utf-8", "replace")
    return event


def _marshal(data: Any) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data).encode()


def _unmarshal(headers: Mapping[str, bytes]) -> Any:
    ctype = headers.get("content-type", b"").decode("latin-1").lower()

    def unmarshal(value: bytes) -> Any:
        if not value:
            return None
        if "json" in ctype:
            return json.loads(value)
        return value

    return unmarshal


def _record(msg: Any) -> KafkaRecord:
    key = msg.key
    if isinstance(key, str):
        key = key.encode()
    headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in msg.headers.items()]
    return KafkaRecord(value=as_bytes(msg.value), key=key, headers=headers)
