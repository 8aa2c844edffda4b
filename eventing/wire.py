"""A consumed record straight to the bytes of its first HTTP attempt: the dispatcher's hot path.

The general path turns a record into a :class:`~runtime.events.CloudEvent`
(:func:`eventing.records.record_to_event`), adds the dispatcher's extensions
(``with_attributes``), encodes it (``to_http_binary``, or ``to_http_batch`` for a batch),
checks the headers, and writes the request. Each step builds and copies dicts and runs
the SDK's constructor; for a record that the sink takes at once, that is most of the
dispatcher's CPU. :class:`WireEncoder` does the same for the common record in one pass,
and gives up (returns None) on everything else, which then takes the general path as
before: a record that carries a CloudEvent, one replayed from a snapshot, an oversize
value, a key that does not decode, a content-type that is not printable ASCII, a JSON
content type over a value that :mod:`orjson` does not accept (the general path decides
with :mod:`json`, and dead-letters with the reason), a record the filter drops. So bad
records are handled exactly as before, by the one code path that dead-letters them.

What comes out is byte for byte what the general path sends (pinned by a parity test,
``tests/eventing/test_wire.py``): the same attributes in the same order, the same
percent-encoding of ``ce-*`` headers, the same batch JSON.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from eventing._kafka import Consumed
from eventing.codec import KafkaRecord
from eventing.errors import MalformedRecordError
from eventing.naming import kafka_source_uri
from eventing.records import KAFKA_EVENT_TYPE, ORIGIN_HEADER, KeyType, decode_key
from runtime.events import BATCH_CONTENT_TYPE, REQUIRED_ATTRIBUTES, _quote_header

__all__ = ["WireEncoder", "binary_attributes"]

_NOT_HEADER_CHAR = re.compile(r"[^a-z0-9]")
_BAD_CTYPE = re.compile(rb"[^\x20-\x7e]")
_EXTENSION = re.compile(r"[a-z0-9]+")
_STRUCTURED = b"application/cloudevents+json"
_NESTING_SAFE = 400
"""Below this many ``[`` and ``{`` a JSON value cannot nest deep enough for :mod:`json` to
fail with RecursionError where :mod:`orjson` succeeds (otherwise orjson accepts less)."""
_EXACT_MS = 2**32 * 1000
_WRAPPED = frozenset(
    {"specversion", "type", "source", "id", "subject", "time", "key", "partitionkey"}
    | {"datacontenttype", "data", "data_base64", "extensions"}
    | {"knativekafkapartition", "knativekafkaoffset"}
)


class WireEncoder:
    """First-attempt requests of one dispatcher that wraps plain records (a KafkaSource).

    Args:
        target: ``(host, port, path, Host header)`` of the ``http://`` sink.
        namespace, name: the source's, for the events' ``source``.
        epoch: the broker's epoch (part of every id), or None.
        key_type: how keys are decoded (Knative's key types).
        max_bytes: larger values take the general path (which dead-letters them).
        extensions: set on every event (a KafkaSource's ``ceOverrides``).
        filter: a predicate over the attributes; events it drops take the general path.
        wrap: False for a Trigger, whose records are binary-mode CloudEvents: one is
            sent as it is (:meth:`request`; a batch takes the general path).

    ``supported`` is False when the configuration needs the general path for every record
    (an extension that is not a lower-case name, or, when wrapping, one that would replace
    a wrapped attribute).
    """

    def __init__(
        self,
        target: tuple[str, int, str, str],
        *,
        namespace: str,
        name: str,
        epoch: str | None,
        key_type: KeyType,
        max_bytes: int,
        extensions: Sequence[tuple[str, str]] = (),
        filter: Callable[[Mapping[str, Any]], bool] | None = None,
        wrap: bool = True,
    ) -> None:
        _, _, path, host = target
        self._head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: "
        self._namespace, self._name = namespace, name
        self._epoch = epoch or None
        self._key_type: KeyType = key_type
        self._max_bytes = max_bytes
        self._extensions = dict(extensions)
        self._ext = tuple(extensions)
        self._filter = filter
        self._wrap = wrap
        self._sources: dict[str, str] = {}
        self._second = -1
        self._second_text = ""
        names = [k for k, _ in extensions]
        self.supported = len(set(names)) == len(names) and all(
            _EXTENSION.fullmatch(k)
            and (not wrap or (k not in _WRAPPED and not k.startswith("kafkaheader")))
            for k in names
        )

    # --- attributes ------------------------------------------------------------------

    def attributes(self, c: Consumed) -> dict[str, str] | None:
        """The attributes the general path gives ``c`` (extensions included), or None
        when ``c`` must take the general path."""
        record = c.record
        value = record.value
        if value is not None and len(value) > self._max_bytes:
            return None
        ctype: bytes | None = None
        exts: list[tuple[str, str]] = []
        for hname, hvalue in record.headers:
            lower = hname.lower()
            if lower == "content-type":
                if hvalue.split(b";")[0].strip().lower() == _STRUCTURED:
                    return None  # a structured-mode CloudEvent
                if ctype is None:
                    ctype = hvalue
                continue
            if lower == "ce_specversion" or lower == ORIGIN_HEADER:
                return None  # a binary-mode CloudEvent, or a record replayed from a snapshot
            exts.append(
                ("kafkaheader" + _NOT_HEADER_CHAR.sub("", lower), hvalue.decode("utf-8", "replace"))
            )
        if ctype is not None:
            if _BAD_CTYPE.search(ctype):
                return None
            if value and b"json" in ctype.lower() and not _json_ok(value):
                return None
        part, off = c.partition, c.offset
        source = self._sources.get(c.topic)
        if source is None:
            source = self._sources[c.topic] = kafka_source_uri(self._namespace, self._name, c.topic)
        ident = f"partition:{part}/offset:{off}"
        attrs: dict[str, str] = {
            "specversion": "1.0",
            "type": KAFKA_EVENT_TYPE,
            "source": source,
            "id": f"{ident}/epoch:{self._epoch}" if self._epoch else ident,
            "subject": f"partition:{part}#{off}",
        }
        ts = c.timestamp_ms
        stamped = False
        if ts is not None and ts >= 0:
            when = self._time(ts)
            if when is not None:
                attrs["time"] = when
                stamped = True
        if record.key is not None:
            try:
                key = decode_key(record.key, self._key_type)
            except MalformedRecordError:
                return None
            attrs["key"] = key
            attrs["partitionkey"] = key
        for ext, text in exts:
            attrs[ext] = text
        if ctype is not None:
            attrs["datacontenttype"] = ctype.decode("utf-8", "replace").lower()
        if not stamped:  # the SDK's CloudEvent stamps the time of its creation
            attrs["time"] = datetime.now(UTC).isoformat()
        attrs["knativekafkapartition"] = str(part)
        attrs["knativekafkaoffset"] = str(off)
        attrs.update(self._extensions)
        if self._filter is not None and not self._filter(attrs):
            return None  # filtered: the general path counts it
        return attrs

    def _time(self, ts: int) -> str | None:
        """``records.wrap_record``'s time, with the date and time of day formatted once a second.

        wrap_record goes through the float ``ts / 1000``, exact to the millisecond below
        2**32 s (year 2106: half its ulp is under half a microsecond); beyond, its formula.
        """
        if ts >= _EXACT_MS:
            try:
                when = datetime.fromtimestamp(ts / 1000, UTC)
            except (OverflowError, OSError, ValueError):
                return None
            return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        second, ms = divmod(ts, 1000)
        if second != self._second:
            try:
                text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
            except (OverflowError, OSError, ValueError):
                return None
            self._second, self._second_text = second, text.replace("+00:00", "")
        return f"{self._second_text}.{ms:03d}Z"

    # --- requests --------------------------------------------------------------------

    def request(self, c: Consumed) -> bytes | None:
        """The binary-mode request of one record, or None (the general path takes it)."""
        if not self._wrap:
            return self._passed_on(c)
        attrs = self.attributes(c)
        if attrs is None:
            return None
        body = c.record.value or b""
        return self._binary(attrs, body)

    def _passed_on(self, c: Consumed) -> bytes | None:
        """A binary-mode CloudEvent record as ``to_http_binary`` sends its event: each
        ``ce_x`` header as ``ce-x``, ``content-type`` as it is, the value as the body
        (JSON under a JSON content type is re-encoded by :mod:`json`, as the general path
        decodes and encodes it)."""
        attrs = binary_attributes(
            c.record, c.partition, c.offset, max_bytes=self._max_bytes, extensions=self._ext
        )
        if attrs is None or "data" in attrs or "extensions" in attrs:
            return None  # (the SDK's own encoder: the general path)
        if self._filter is not None and not self._filter(attrs):
            return None  # filtered: the general path counts it
        value = c.record.value
        body = b""
        if value:
            ctype = attrs.get("datacontenttype", "")
            if "json" in ctype.lower():
                data = json.loads(value)
                body = b"" if data is None else json.dumps(data).encode()
            else:
                body = value
        return self._binary(attrs, body)

    def _binary(self, attrs: Mapping[str, str], body: bytes) -> bytes:
        lines = [self._head, str(len(body)), "\r\n"]
        ctype = attrs.get("datacontenttype")
        if ctype:
            lines.append(f"content-type: {ctype}\r\n")
        for k, v in attrs.items():
            if k != "datacontenttype":
                lines.append(f"ce-{k}: {_quote_header(v)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1") + body

    def batch(self, records: Sequence[Consumed]) -> bytes | None:
        """The ``application/cloudevents-batch+json`` request of ``records``, or None when
        any of them must take the general path (which then takes the whole batch)."""
        if not self._wrap:
            return None
        items: list[dict[str, str]] = []
        for c in records:
            attrs = self.attributes(c)
            if attrs is None:
                return None
            value = c.record.value
            if value is not None:
                attrs["data_base64"] = base64.b64encode(value).decode("ascii")
            items.append(attrs)
        body = json.dumps(items).encode()
        head = f"{self._head}{len(body)}\r\ncontent-type: {BATCH_CONTENT_TYPE}\r\n\r\n"
        return head.encode("latin-1") + body


def binary_attributes(
    record: KafkaRecord,
    partition: int,
    offset: int,
    *,
    max_bytes: int,
    extensions: Sequence[tuple[str, str]] = (),
) -> dict[str, str] | None:
    """The attributes a filter sees on the event of a binary-mode CloudEvent record,
    read from its ``ce_*`` headers alone; None when the record must take the general path.

    The same dict, in the same order, as ``events.attributes`` of the dispatcher's
    ``_event_of`` (``codec.from_kafka``, then Knative's ``knativekafka*`` extensions and the
    config's ``extensions``), without decoding the value: so a trigger drops the records
    its filter rejects without building their events (pinned by a property test,
    ``tests/eventing/test_wire.py``). Only a missing ``time`` differs: the SDK stamps the
    time of the event's creation, this the time of the call.

    None for anything the general path must judge (and may dead-letter with its reason):
    no ``ce_specversion`` or not ``1.0``, a structured-mode content type, a required
    attribute missing or empty, a header or key that is not UTF-8, an attribute name
    that is not lower-case letters and digits, a content type that is not printable
    ASCII, a JSON content type over a value :mod:`orjson` does not accept, an oversize
    value.
    """
    value = record.value
    if value is not None and len(value) > max_bytes:
        return None
    attrs: dict[str, str] = {}
    ctype: bytes | None = None
    names = _ATTRIBUTE_OF
    try:
        for hname, hvalue in record.headers:
            name = names.get(hname)
            if name is None:
                name = _attribute_of(hname)
            if name is _INVALID:
                return None
            if name:
                attrs[name] = hvalue.decode()
                if name == "datacontenttype":
                    ctype = hvalue
        if record.key is not None:
            attrs["partitionkey"] = record.key.decode()
    except UnicodeDecodeError:
        return None
    if attrs.get("specversion") != "1.0" or not all(map(attrs.get, REQUIRED_ATTRIBUTES)):
        return None
    if ctype is not None:
        if ctype.split(b";")[0].strip().lower() == _STRUCTURED:
            return None
        if _BAD_CTYPE.search(ctype):
            return None
        if value and b"json" in ctype.lower() and not _json_ok(value):
            return None
    if "time" not in attrs:  # the SDK's CloudEvent stamps the time of its creation
        attrs["time"] = datetime.now(UTC).isoformat()
    attrs["knativekafkapartition"] = str(partition)
    attrs["knativekafkaoffset"] = str(offset)
    attrs.update(extensions)
    return attrs


_INVALID = "\0"
"""A header that leaves the record to the general path (an attribute name CloudEvents
forbids, a ``ce_datacontenttype`` beside ``content-type``)."""
_ATTRIBUTE_OF: dict[str, str] = {}
"""Header name -> attribute name (``""``: not an attribute), for the names seen so far."""
_NAMES_KEPT = 4096


def _attribute_of(hname: str) -> str:
    """The attribute ``codec.from_kafka`` makes of header ``hname``: ``""`` for none,
    :data:`_INVALID` when the general path must judge the record."""
    lower = hname.lower()
    if lower == "content-type":
        name = "datacontenttype"
    elif lower.startswith("ce_"):
        name = lower[3:]
        if not _EXTENSION.fullmatch(name) or name == "datacontenttype":
            name = _INVALID  # (beside content-type, the SDK's order picks the winner)
    else:
        name = ""
    if len(_ATTRIBUTE_OF) < _NAMES_KEPT:
        _ATTRIBUTE_OF[hname] = name
    return name


def _json_ok(value: bytes) -> bool:
    """True when :func:`json.loads` accepts ``value`` (what the general path checks);
    False means: let the general path decide (and say why)."""
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    # orjson accepts a subset of what json does, except nesting json's recursion refuses
    return value.count(b"[") + value.count(b"{") < _NESTING_SAFE
