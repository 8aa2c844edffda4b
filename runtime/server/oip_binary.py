"""The binary tensor extension of the Open Inference Protocol, and raw tensor bytes.

Pure, without I/O; the REST binding (this module's ``split_request``/``encode_reply``)
and the gRPC binding (``raw_input_contents``/``raw_output_contents``) share the codec:

* A request whose header ``Inference-Header-Content-Length`` is N has N bytes of JSON,
  then the raw bytes of each input whose ``parameters.binary_data_size`` is set, in the
  order of ``inputs``. Raw bytes are row-major, little-endian, without padding; a
  ``BYTES`` element is a 4-byte little-endian length, then that many bytes. The size of
  every input must match its shape and datatype, and every byte must belong to an input:
  anything else is a 400 that names the input.
* Outputs go back binary when the request asks: ``outputs[i].parameters.binary_data``
  per output, or ``parameters.binary_data_output`` for every output not listed. The reply
  then has the same layout, with ``Inference-Header-Content-Length`` set.

Decoded tensors are numpy arrays (``BYTES``: an object array of ``bytes``).

:class:`HeaderReader` serves the common request faster: a client sends the same JSON
header on every call of one shape (only the bytes after it change), so a header that
held one numeric binary input is parsed and checked once and kept, keyed by its bytes.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic_core import from_json, to_json

from runtime.server.errors import BadRequest

__all__ = [
    "DTYPES",
    "HEADER",
    "NUMPY",
    "HeaderReader",
    "KeptHeader",
    "binary_outputs",
    "decode_raw",
    "encode_raw",
    "encode_reply",
    "output_choices",
    "split_request",
]

HEADER = "inference-header-content-length"
"""The header (lower-case) that marks a binary body: the length of its JSON part."""

DTYPES: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
"""Numpy dtype (little-endian) of every fixed-size OIP datatype; BF16 and BYTES are special."""

_DATATYPES = (*DTYPES, "BF16", "BYTES")
NUMPY = {name: np.dtype(code) for name, code in DTYPES.items()}
"""The numpy dtype of every fixed-size OIP datatype, made once (not per tensor)."""


def _shape_of(where: str, shape: Any) -> list[int]:
    if type(shape) is list and all(type(d) is int and d >= 0 for d in shape):
        return shape  # the common case, checked at once (a bool is not a size)
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"{where}: shape must be a list of sizes, got {shape!r}")
    return list(shape)


def decode_raw(where: str, datatype: Any, shape: Any, raw: bytes) -> NDArray[Any]:
    """The tensor that ``raw`` holds, shaped ``shape``; a 400 naming ``where`` if it does not fit.

    Example:
        >>> decode_raw("inputs[0] (x)", "INT32", [2], b"\\x01\\x00\\x00\\x00\\x02\\x00\\x00\\x00")
        array([1, 2], dtype=int32)
    """
    dims = _shape_of(where, shape)
    count = math.prod(dims)
    if datatype == "BYTES":
        return _decode_bytes(where, dims, count, raw)
    if datatype == "BF16":
        if len(raw) != count * 2:
            raise _size_error(where, "BF16", dims, count * 2, len(raw))
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32).reshape(dims)
    dtype = NUMPY.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequest(
            f"{where}: unknown datatype {datatype!r}; the protocol names: {', '.join(_DATATYPES)}"
        )
    size = dtype.itemsize * count
    if len(raw) != size:
        raise _size_error(where, datatype, dims, size, len(raw))
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def _size_error(where: str, datatype: str, dims: list[int], want: int, got: int) -> BadRequest:
    return BadRequest(
        f"{where}: a {datatype} tensor of shape {dims} is {want} bytes, but {got} bytes came; "
        "send row-major little-endian values without padding"
    )


def _decode_bytes(where: str, dims: list[int], count: int, raw: bytes) -> NDArray[Any]:
    items: list[bytes] = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise BadRequest(
                f"{where}: BYTES element {len(items)} has a truncated length prefix "
                f"({end - pos} of 4 bytes); each element is a 4-byte little-endian length "
                "then the bytes"
            )
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > end:
            raise BadRequest(
                f"{where}: BYTES element {len(items)} says {n} bytes but only {end - pos} remain"
            )
        items.append(raw[pos : pos + n])
        pos += n
    if len(items) != count:
        raise BadRequest(
            f"{where}: shape {dims} holds {count} BYTES elements but {len(items)} came"
        )
    out = np.empty(count, dtype=object)
    out[:] = items
    return out.reshape(dims)


def encode_raw(datatype: str, flat: list[Any] | NDArray[Any]) -> bytes:
    """Raw bytes of a flat list (or numpy array) of values, row-major, as :func:`decode_raw`
    reads them."""
    if isinstance(flat, np.ndarray) and datatype != "BYTES":
        return flat.astype(NUMPY[datatype], copy=False).tobytes()
    if datatype == "BYTES":
        parts = []
        for v in flat:
            b = v if isinstance(v, bytes) else (v if isinstance(v, str) else json.dumps(v)).encode()
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.asarray(flat, dtype=NUMPY[datatype]).tobytes()


def split_request(
    body: bytes, header_length: str
) -> tuple[dict[str, Any], dict[int, NDArray[Any]]]:
    """The JSON part of a binary request, and its binary inputs by index in ``inputs``.

    Raises:
        BadRequest: the header length, a ``binary_data_size`` or a tensor does not fit.
    """
    try:
        n = int(header_length)
    except ValueError:
        raise BadRequest(
            f"Inference-Header-Content-Length {header_length!r} is not a number"
        ) from None
    if not 0 < n <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length is {n} but the body has {len(body)} bytes; "
            "it counts the bytes of the JSON part that starts the body"
        )
    try:
        payload = from_json(body[:n])  # pydantic-core's parser: json.loads' result, faster
    except ValueError as err:
        raise BadRequest(f"malformed JSON in the first {n} bytes (the header): {err}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise BadRequest('an inference request is a JSON object with an "inputs" list of tensors')
    inputs = payload["inputs"]
    if len(inputs) == 1:
        one = _one_input(body, n, inputs[0])
        if one is not None:
            return payload, {0: one}
    arrays: dict[int, NDArray[Any]] = {}
    pos = n
    for k, tensor in enumerate(payload["inputs"]):
        if not isinstance(tensor, dict):
            continue  # decode_inputs names the problem
        params = tensor.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            continue
        where = f"inputs[{k}] ({tensor.get('name')})"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"{where}: binary_data_size must be a byte count, got {size!r}")
        if pos + size > len(body):
            raise BadRequest(
                f"{where}: binary_data_size is {size} but only {len(body) - pos} bytes remain "
                "after the header and the inputs before it"
            )
        if "data" in tensor:
            raise BadRequest(f"{where}: has both data and binary_data_size; send one of them")
        arrays[k] = decode_raw(
            where, tensor.get("datatype"), tensor.get("shape"), body[pos : pos + size]
        )
        pos += size
    if pos != len(body):
        raise BadRequest(
            f"{len(body) - pos} bytes follow the last binary input; the binary_data_size "
            "of the inputs must add up to the body after the header"
        )
    return payload, arrays


def _one_input(body: bytes, n: int, tensor: Any) -> NDArray[Any] | None:
    """The common request's only tensor, numeric and the rest of the body, read at once;
    or None (then the general loop reads it, and names any problem)."""
    if type(tensor) is not dict or "data" in tensor:
        return None
    params, shape = tensor.get("parameters"), tensor.get("shape")
    size = params.get("binary_data_size") if type(params) is dict else None
    dtype = NUMPY.get(tensor.get("datatype"))  # type: ignore[arg-type]
    if dtype is None or type(size) is not int or size != len(body) - n or type(shape) is not list:
        return None
    count = 1
    for d in shape:
        if type(d) is not int or d < 0:
            return None
        count *= d
    if not size or count * dtype.itemsize != size:
        return None
    return np.frombuffer(body, dtype=dtype, offset=n).reshape(shape)


OutputChoices = tuple[bool, set[str], set[str]]
"""What a request asks of its outputs: binary by default, the listed ones that are binary,
and every name it lists."""


_CACHED_HEADERS = 64
_CACHED_REPLIES = 16


class KeptHeader:
    """What is worked out once for a header :class:`HeaderReader` keeps.

    ``choices``: its :data:`OutputChoices`. :meth:`encode_reply` answers like
    :func:`encode_reply`, with the reply's JSON header kept too: a reply of the same
    version, output names, datatypes and shapes has the same header bytes, so only the
    tensors' bytes are made per request.
    """

    __slots__ = ("_heads", "choices")

    def __init__(self, choices: OutputChoices) -> None:
        self.choices = choices
        self._heads: dict[tuple[Any, ...], tuple[bytes, str]] = {}

    def encode_reply(
        self, reply: dict[str, Any], payload: Mapping[str, Any]
    ) -> tuple[dict[str, str], bytes]:
        """What :func:`encode_reply` answers for ``reply`` to ``payload`` (this header's)."""
        outputs = reply["outputs"]
        default, listed, named = self.choices
        if not outputs:
            return encode_reply(reply, payload, self.choices)  # nothing binary: JSON
        key: tuple[Any, ...] = (reply.get("model_version"),)
        for out in outputs:
            name, data = out["name"], out.get("data")
            binary = name in listed or (default and name not in named)
            if not binary or not isinstance(data, np.ndarray) or "parameters" in out:
                return encode_reply(reply, payload, self.choices)  # not the kept layout
            key += (name, out["datatype"], *out["shape"], None)
        kept = self._heads.get(key)
        if kept is None:
            headers, body = encode_reply(reply, payload, self.choices)
            length = headers["Inference-Header-Content-Length"]
            if len(self._heads) >= _CACHED_REPLIES:
                self._heads.clear()
            self._heads[key] = (body[: int(length)], length)
            return headers, body
        head, length = kept
        blobs = [encode_raw(out["datatype"], out["data"]) for out in outputs]
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": length,
        }
        return headers, b"".join([head, *blobs])


class HeaderReader:
    """:func:`split_request` with the headers of one-input requests parsed once.

    The payload handed out is shared by every request with the same header: read it,
    never change it. Anything else (several inputs, ``BYTES``, a size that does not fit
    the body) goes through :func:`split_request` each time, which names any problem.
    """

    def __init__(self) -> None:
        self._plans: dict[bytes, tuple[dict[str, Any], np.dtype[Any], Any, int] | None] = {}
        self._kept: dict[int, KeptHeader] = {}  # by id() of a payload in _plans

    def split(
        self, body: bytes, header_length: str
    ) -> tuple[dict[str, Any], dict[int, NDArray[Any]]]:
        """What :func:`split_request` answers, for the same arguments."""
        n = int(header_length) if header_length.isdigit() else -1
        if not 0 < n <= len(body):
            return split_request(body, header_length)
        head = body[:n]
        plans = self._plans
        if head in plans:
            plan = plans[head]
            if plan is not None and plan[3] == len(body) - n:
                payload, dtype, shape, _ = plan
                return payload, {0: np.ndarray(shape, dtype=dtype, buffer=body, offset=n)}
            return split_request(body, header_length)
        payload, arrays = split_request(body, header_length)  # raises for a bad request
        plan = None
        one = arrays.get(0)
        if len(payload["inputs"]) == 1 and one is not None and one.dtype.kind in "biuf":
            known = NUMPY.get(str(payload["inputs"][0].get("datatype")))
            if known is not None and known == one.dtype:
                plan = (payload, known, one.shape, one.nbytes)
        if len(plans) >= _CACHED_HEADERS:
            plans.clear()
            self._kept.clear()
        plans[head] = plan
        if plan is not None:
            self._kept[id(payload)] = KeptHeader(output_choices(payload))
        return payload, arrays

    def kept(self, payload: Mapping[str, Any]) -> KeptHeader | None:
        """The :class:`KeptHeader` of a payload this reader handed out from a kept header."""
        return self._kept.get(id(payload))

    def choices(self, payload: Mapping[str, Any]) -> OutputChoices:
        """:func:`output_choices` of ``payload``: worked out once for a header kept here."""
        known = self._kept.get(id(payload))
        return known.choices if known is not None else output_choices(payload)


def _flag(params: Any, key: str) -> bool | None:
    if isinstance(params, dict) and key in params:
        return bool(params[key])
    return None


def binary_outputs(payload: Mapping[str, Any]) -> tuple[bool, set[str]]:
    """The default for outputs not listed (``binary_data_output``), and listed ones that are binary."""
    default = bool(_flag(payload.get("parameters"), "binary_data_output"))
    listed: set[str] = set()
    outputs = payload.get("outputs")
    if isinstance(outputs, list):
        for out in outputs:
            if not isinstance(out, dict):
                continue
            flag = _flag(out.get("parameters"), "binary_data")
            if flag if flag is not None else default:
                listed.add(str(out.get("name")))
    return default, listed


def output_choices(payload: Mapping[str, Any]) -> OutputChoices:
    """The :data:`OutputChoices` of a request."""
    default, listed = binary_outputs(payload)
    requested = payload.get("outputs")
    named = (
        {str(o.get("name")) for o in requested if isinstance(o, dict)}
        if isinstance(requested, list)
        else set()
    )
    return default, listed, named


def encode_reply(
    reply: dict[str, Any], payload: Mapping[str, Any], choices: OutputChoices | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers and body of an inference reply: binary outputs where the request asked
    (``choices``: :func:`output_choices` of ``payload``, when known already)."""
    default, listed, named = choices or output_choices(payload)
    blobs: list[bytes] = []
    binary = default or listed
    for out in reply["outputs"]:
        name = out["name"]
        if binary and (name in listed or (default and name not in named)):
            blob = encode_raw(out["datatype"], out.pop("data"))
            params = out.get("parameters")
            out["parameters"] = (
                {**params, "binary_data_size": len(blob)}
                if params
                else {"binary_data_size": len(blob)}
            )
            blobs.append(blob)
        elif isinstance(out.get("data"), np.ndarray):  # the fast encoder's, staying JSON
            out["data"] = out["data"].tolist()
    head = to_json(reply)  # compact, UTF-8; NaN and big ints as json.dumps writes them
    if not blobs:
        return {"Content-Type": "application/json"}, head
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    return headers, b"".join([head, *blobs])
