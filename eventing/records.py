"""Pure conversions between consumed Kafka records and the CloudEvents a sink receives.

A record that carries a CloudEvent (binary or structured mode) passes through; any other
record is wrapped exactly as Knative's KafkaSource does, its key read by the source's key
type (Knative's ``kafkasources.sources.knative.dev/key-type``: ``string``, ``int``,
``float``, ``byte-array``). Malformed records raise
:class:`~eventing.errors.MalformedRecordError` with the reason, so the dispatcher can
dead-letter them. Dead-lettered events get Knative's ``knativeerror*`` extensions.

Ids: Knative's ``partition:<p>/offset:<o>``. On a broker whose log does not outlive it
(the embedded one, in memory) offsets start again at 0 with every new broker, so the
dispatcher passes the broker's *epoch* and the id becomes
``partition:<p>/offset:<o>/epoch:<e>``: unique across broker restarts, so idempotent
sinks (the dataset) never mistake a new record for an old one. A record replayed into a
new broker from a snapshot (:mod:`eventing.backlog`) carries the ``mlfn-origin`` header
and keeps the id it had.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from eventing import codec
from eventing.codec import KafkaRecord
from eventing.errors import MalformedRecordError
from eventing.naming import kafka_source_uri
from runtime import events
from runtime.events import CloudEvent

__all__ = [
    "ERROR_DATA_LIMIT",
    "KAFKA_EVENT_TYPE",
    "ORIGIN_HEADER",
    "KeyType",
    "RecordOrigin",
    "dead_letter_event",
    "decode_key",
    "event_id",
    "raw_event",
    "record_to_event",
    "wrap_record",
]

KeyType = Literal["string", "int", "float", "byte-array"]
"""How a record key becomes the ``key`` extension (Knative's key types)."""

ORIGIN_HEADER = "mlfn-origin"
"""``<epoch>/<partition>/<offset>`` of a record replayed from a snapshot: its first identity."""

KAFKA_EVENT_TYPE = "dev.knative.kafka.event"
ERROR_DATA_LIMIT = 1024
"""Bytes of the response body kept in ``knativeerrordata`` (before base64), as Knative."""

_NOT_HEADER_CHAR = re.compile(r"[^a-z0-9]")
"""What Knative drops from a lower-cased header name to make an extension name."""
_BAD_CTYPE = re.compile(rb"[^\x20-\x7e]")
_ATTRIBUTE = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class RecordOrigin:
    """Where a record came from: enough to build Knative's ids and source."""

    namespace: str
    source_name: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    epoch: str | None = None
    """The broker incarnation when its log is not durable (see the module docs)."""


def event_id(partition: int, offset: int, epoch: str | None) -> str:
    """Knative's ``partition:<p>/offset:<o>``, with ``/epoch:<e>`` when there is an epoch."""
    base = f"partition:{partition}/offset:{offset}"
    return f"{base}/epoch:{epoch}" if epoch else base


def decode_key(key: bytes, key_type: KeyType) -> str:
    """The ``key`` extension of a record key, as Knative's KafkaSource deserializes it.

    ``string``: UTF-8; ``int``: a 4- or 8-byte big-endian signed integer; ``float``: a 4-
    or 8-byte big-endian IEEE 754 number; ``byte-array``: the bytes, base64-encoded.

    Raises:
        MalformedRecordError: the key does not decode as ``key_type``.
    """
    if key_type == "byte-array":
        return base64.b64encode(key).decode()
    if key_type == "string":
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRecordError(
                f"record key is not UTF-8 (bytes {key[:16].hex(' ')}"
                f"{' ...' if len(key) > 16 else ''}); set the source's key_type to "
                "'byte-array' to receive such keys base64-encoded"
            ) from None
    if len(key) not in (4, 8):
        raise MalformedRecordError(
            f"record key is {len(key)} bytes; a key of type {key_type!r} must be 4 or 8 bytes"
            " (big-endian); set the source's key_type to 'byte-array' for other keys"
        )
    if key_type == "int":
        return str(int.from_bytes(key, "big", signed=True))
    value = struct.unpack(">f" if len(key) == 4 else ">d", key)[0]
    return repr(value) if math.isfinite(value) else str(value)


def _replayed(record: KafkaRecord) -> tuple[str, int, int] | None:
    raw = _header(record, ORIGIN_HEADER)
    if raw is None:
        return None
    try:
        epoch, part, off = raw.decode("ascii").split("/")
        return epoch, int(part), int(off)
    except ValueError:
        return None  # not ours: treated as an ordinary header


def _source(o: RecordOrigin) -> str:
    return kafka_source_uri(o.namespace, o.source_name, o.topic)


def _header(record: KafkaRecord, name: str) -> bytes | None:
    for k, v in record.headers:
        if k.lower() == name:
            return v
    return None


def wrap_record(
    record: KafkaRecord, origin: RecordOrigin, key_type: KeyType = "string"
) -> CloudEvent:
    """Wrap a non-CloudEvent record as Knative's KafkaSource does.

    type ``dev.knative.kafka.event``; source ``/apis/v1/namespaces/<ns>/kafkasources/<name>#<topic>``;
    id ``partition:<p>/offset:<o>`` (see :func:`event_id`); subject ``partition:<p>#<o>``;
    the key, decoded by ``key_type`` (:func:`decode_key`), in the ``key`` and
    ``partitionkey`` extensions; each header but ``content-type`` as ``kafkaheader<name>``
    (name lower-cased, then every character other than ``a-z0-9`` removed, as CloudEvents
    extension names require; the value as UTF-8, invalid bytes replaced); time: the
    record's timestamp. The value is the data, unchanged; the ``content-type`` header
    becomes ``datacontenttype``, lower-cased (Knative's ``InvalidCloudEventInterceptor``,
    eventing-kafka-broker 7d8fe89f4b5e).

    Raises:
        MalformedRecordError: the key does not decode as ``key_type``.
    """
    epoch, part, off = origin.epoch, origin.partition, origin.offset
    replayed = _replayed(record)
    if replayed is not None:
        epoch, part, off = replayed
    attrs: dict[str, str] = {
        "specversion": "1.0",
        "type": KAFKA_EVENT_TYPE,
        "source": _source(origin),
        "id": event_id(part, off, epoch or None),
        "subject": f"partition:{part}#{off}",
    }
    if origin.timestamp_ms is not None and origin.timestamp_ms >= 0:
        try:
            when = datetime.fromtimestamp(origin.timestamp_ms / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            when = None  # a timestamp no calendar holds: no time attribute
        if when is not None:
            attrs["time"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if record.key is not None:
        key = decode_key(record.key, key_type)
        attrs["key"] = key
        attrs["partitionkey"] = key
    for name, value in record.headers:
        if name.lower() == "content-type":
            continue  # Knative carries it as datacontenttype only
        if replayed is not None and name == ORIGIN_HEADER:
            continue
        ext = "kafkaheader" + _NOT_HEADER_CHAR.sub("", name.lower())
        attrs[ext] = value.decode("utf-8", "replace")
    ctype = _header(record, "content-type")
    data: object = record.value
    if ctype is not None:
        attrs["datacontenttype"] = ctype.decode("utf-8", "replace").lower()
    return CloudEvent(attrs, data)


def raw_event(record: KafkaRecord, origin: RecordOrigin, reason: str) -> CloudEvent:
    """A malformed record as an event for the dead-letter sink: raw bytes, nothing parsed.

    The key is always base64 (``byte-array``), so a key that could not be decoded still
    reaches the dead-letter sink intact.
    """
    safe = KafkaRecord(value=record.value, key=record.key, headers=[])
    origin_header = _header(record, ORIGIN_HEADER)
    if origin_header is not None:
        safe.headers.append((ORIGIN_HEADER, origin_header))
    ev = wrap_record(safe, origin, "byte-array")
    ev["datacontenttype"] = "application/octet-stream"
    ev["mlfnerror"] = reason
    return ev


def _check_attributes(event: CloudEvent) -> None:
    """What the SDK lets through and no HTTP request can carry, as a reason."""
    attrs = events.attributes(event)
    bad = [n for n in attrs if not _ATTRIBUTE.fullmatch(n)]
    if bad:
        raise MalformedRecordError(
            f"invalid CloudEvent record: attribute name(s) {', '.join(map(repr, bad[:5]))} "
            "are not lower-case ASCII letters and digits, as CloudEvents requires"
        )
    for name, value in attrs.items():
        if name in ("id", "source", "type", "specversion") and (
            not isinstance(value, str) or not value
        ):
            raise MalformedRecordError(
                f"invalid CloudEvent record: {name} must be a non-empty string, got {value!r:.64}"
            )
        if not isinstance(value, str | int | bool | datetime) or isinstance(value, float):
            raise MalformedRecordError(
                f"invalid CloudEvent record: attribute {name!r} is a {type(value).__name__}; "
                "CloudEvents attributes are strings, integers or booleans"
            )
    ctype = attrs.get("datacontenttype")
    if ctype is not None and _BAD_CTYPE.search(str(ctype).encode("utf-8", "replace")):
        raise MalformedRecordError(
            f"invalid CloudEvent record: datacontenttype {str(ctype)[:64]!r} is not a "
            "media type (printable ASCII)"
        )


def record_to_event(
    record: KafkaRecord,
    origin: RecordOrigin,
    *,
    max_bytes: int,
    wrap: bool = True,
    key_type: KeyType = "string",
) -> CloudEvent:
    """The CloudEvent a sink receives for ``record``.

    Args:
        record: the consumed record.
        origin: where it came from.
        max_bytes: the largest value accepted.
        wrap: wrap non-CloudEvent records (KafkaSource); if False they are malformed
            (a broker topic holds only CloudEvents).
        key_type: how the key of a wrapped record is decoded (Knative's key types).

    Raises:
        MalformedRecordError: oversize value, invalid CloudEvent headers or envelope,
            invalid JSON under a JSON content type, a key that does not decode as
            ``key_type``, or a non-CloudEvent where one is required.
    """
    size = len(record.value or b"")
    if size > max_bytes:
        raise MalformedRecordError(
            f"record value is {size} bytes, above the limit of {max_bytes} "
            "(raise MLFN_MAX_RECORD_BYTES to accept it)"
        )
    if codec.is_cloudevent_kafka(record.headers):
        try:
            event = codec.from_kafka(record)
        except (events.CodecError, ValueError) as err:
            raise MalformedRecordError(f"invalid CloudEvent record: {err}") from err
        _check_attributes(event)
        return event
    if not wrap:
        raise MalformedRecordError(
            "record carries no CloudEvent (no ce_specversion header, not structured mode); "
            "a broker topic accepts CloudEvents only"
        )
    ctype = _header(record, "content-type")
    if ctype is not None and _BAD_CTYPE.search(ctype):
        raise MalformedRecordError(
            f"record's content-type header {ctype[:64]!r} is not printable ASCII; "
            "it cannot become the event's datacontenttype"
        )
    if ctype is not None and b"json" in ctype.lower() and record.value:
        try:
            json.loads(record.value)
        except ValueError as err:
            raise MalformedRecordError(
                f"record declares content-type {ctype.decode('latin-1')!r} but its value "
                f"is not valid JSON: {err}"
            ) from err
    return wrap_record(record, origin, key_type)


def dead_letter_event(
    event: CloudEvent, *, dest: str, code: int | None, data: bytes | None
) -> CloudEvent:
    """``event`` with Knative's dead-letter extensions.

    ``knativeerrordest`` is the sink that failed, ``knativeerrorcode`` its HTTP status
    (absent when there was none: a connection error or a malformed record),
    ``knativeerrordata`` the base64 of the first 1024 bytes of the response body (or of
    the reason, when there is no response).
    """
    attrs: dict[str, object] = {"knativeerrordest": dest}
    if code is not None:
        attrs["knativeerrorcode"] = str(code)
    if data:
        attrs["knativeerrordata"] = base64.b64encode(data[:ERROR_DATA_LIMIT]).decode()
    return events.with_attributes(event, **attrs)
