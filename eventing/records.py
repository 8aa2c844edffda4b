"""Pure conversions between consumed Kafka records and the CloudEvents a sink receives.

A record that carries a CloudEvent (binary or structured mode) passes through; any other
record is wrapped exactly as Knative's KafkaSource does. Malformed records raise
:class:`~eventing.errors.MalformedRecordError` with the reason, so the dispatcher can
dead-letter them. Dead-lettered events get Knative's ``knativeerror*`` extensions.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from eventing import codec
from eventing.codec import KafkaRecord
from eventing.errors import MalformedRecordError
from runtime import events
from runtime.events import CloudEvent

__all__ = [
    "ERROR_DATA_LIMIT",
    "KAFKA_EVENT_TYPE",
    "RecordOrigin",
    "dead_letter_event",
    "raw_event",
    "record_to_event",
    "wrap_record",
]

KAFKA_EVENT_TYPE = "dev.knative.kafka.event"
ERROR_DATA_LIMIT = 1024
"""Bytes of the response body kept in ``knativeerrordata`` (before base64), as Knative."""

_NOT_ALNUM = re.compile(r"[^a-zA-Z0-9]")


@dataclass(frozen=True, slots=True)
class RecordOrigin:
    """Where a record came from: enough to build Knative's ids and source."""

    namespace: str
    source_name: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


def _source(o: RecordOrigin) -> str:
    return f"/apis/v1/namespaces/{o.namespace}/kafkasources/{o.source_name}#{o.topic}"


def _header(record: KafkaRecord, name: str) -> bytes | None:
    for k, v in record.headers:
        if k.lower() == name:
            return v
    return None


def wrap_record(record: KafkaRecord, origin: RecordOrigin) -> CloudEvent:
    """Wrap a non-CloudEvent record as Knative's KafkaSource does.

    type ``dev.knative.kafka.event``; source ``/apis/v1/namespaces/<ns>/kafkasources/<name>#<topic>``;
    id ``partition:<p>/offset:<o>``; subject ``partition:<p>#<o>``; the key (UTF-8) in the
    ``key`` and ``partitionkey`` extensions; each header as ``kafkaheader<name>`` (name
    lower-cased, characters other than letters and digits removed, as CloudEvents
    extension names require); time: the record's timestamp. The value is the data, unchanged; a ``content-type``
    header becomes ``datacontenttype``.
    """
    attrs: dict[str, str] = {
        "specversion": "1.0",
        "type": KAFKA_EVENT_TYPE,
        "source": _source(origin),
        "id": f"partition:{origin.partition}/offset:{origin.offset}",
        "subject": f"partition:{origin.partition}#{origin.offset}",
    }
    if origin.timestamp_ms is not None and origin.timestamp_ms >= 0:
        when = datetime.fromtimestamp(origin.timestamp_ms / 1000, UTC)
        attrs["time"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if record.key is not None:
        key = record.key.decode("utf-8", "replace")
        attrs["key"] = key
        attrs["partitionkey"] = key
    for name, value in record.headers:
        ext = "kafkaheader" + _NOT_ALNUM.sub("", name).lower()
        attrs[ext] = value.decode("utf-8", "replace")
    ctype = _header(record, "content-type")
    data: object = record.value
    if ctype is not None:
        attrs["datacontenttype"] = ctype.decode("latin-1")
    return CloudEvent(attrs, data)


def raw_event(record: KafkaRecord, origin: RecordOrigin, reason: str) -> CloudEvent:
    """A malformed record as an event for the dead-letter sink: raw bytes, nothing parsed."""
    safe = KafkaRecord(value=record.value, key=record.key, headers=[])
    ev = wrap_record(safe, origin)
    ev["datacontenttype"] = "application/octet-stream"
    ev["mlfnerror"] = reason
    return ev


def record_to_event(
    record: KafkaRecord, origin: RecordOrigin, *, max_bytes: int, wrap: bool = True
) -> CloudEvent:
    """The CloudEvent a sink receives for ``record``.

    Args:
        record: the consumed record.
        origin: where it came from.
        max_bytes: the largest value accepted.
        wrap: wrap non-CloudEvent records (KafkaSource); if False they are malformed
            (a broker topic holds only CloudEvents).

    Raises:
        MalformedRecordError: oversize value, invalid CloudEvent headers or envelope,
            invalid JSON under a JSON content type, or a non-CloudEvent where one is required.
    """
    size = len(record.value or b"")
    if size > max_bytes:
        raise MalformedRecordError(
            f"record value is {size} bytes, above the limit of {max_bytes} "
            "(raise MLFN_MAX_RECORD_BYTES to accept it)"
        )
    if codec.is_cloudevent_kafka(record.headers):
        try:
            return codec.from_kafka(record)
        except (events.CodecError, ValueError) as err:
            raise MalformedRecordError(f"invalid CloudEvent record: {err}") from err
    if not wrap:
        raise MalformedRecordError(
            "record carries no CloudEvent (no ce_specversion header, not structured mode); "
            "a broker topic accepts CloudEvents only"
        )
    ctype = _header(record, "content-type")
    if ctype is not None and b"json" in ctype.lower() and record.value:
        try:
            json.loads(record.value)
        except ValueError as err:
            raise MalformedRecordError(
                f"record declares content-type {ctype.decode('latin-1')!r} but its value "
                f"is not valid JSON: {err}"
            ) from err
    return wrap_record(record, origin)


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
