"""``ModelInferRequest``/``ModelInferResponse`` <-> the dispatcher's OIP request and reply.

Pure, without I/O. A request becomes the same ``payload`` (``inputs``, ``outputs``,
``parameters``, ``id``) and ``arrays`` (inputs decoded by index) that the REST binding
hands :meth:`runtime.server.dispatch.Dispatcher.oip_reply`; tensors come from
``raw_input_contents`` (decoded as the binary extension's bytes) or from the typed
``contents``. The reply's outputs always travel as ``raw_output_contents``, as Triton's
server sends them (both tritonclient and kserve read them).

The common call, read without protobuf's field accessors (:class:`RequestReader`): a
client sends the same request but for the raw tensor bytes on every call, so the rest
of the message (its *head*) is parsed and checked once and kept, keyed by its bytes;
each call then splits the wire format into that head and its raw contents and makes
the arrays. A head seen for the first time, or anything unusual (typed contents,
``BYTES`` or ``BF16``, a size that does not fit), takes the general path, which names
any problem. :func:`encode_response` writes the reply's wire format directly (the same
message as :func:`response_message` serialised).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from runtime.server.errors import BadRequest
from runtime.server.grpc import grpc_predict_v2_pb2 as pb
from runtime.server.oip_binary import DTYPES, NUMPY, decode_raw, encode_raw

__all__ = [
    "RequestReader",
    "encode_response",
    "request_payload",
    "response_message",
    "split_raw",
]

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed field of ``InferTensorContents`` that carries each datatype (FP16, BF16: raw only)."""


def _parameters(params: Any) -> dict[str, Any]:
    if not len(params):
        return {}
    out: dict[str, Any] = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
    return out


def _typed(where: str, tensor: Any, shape: list[int]) -> NDArray[Any]:
    datatype = tensor.datatype
    field = _CONTENTS.get(datatype)
    if field is None:
        raise BadRequest(
            f"{where}: datatype {datatype!r} has no typed contents; send it in "
            "raw_input_contents"
            + ("" if datatype in ("FP16", "BF16") else " with a known datatype")
        )
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise BadRequest(
            f"{where}: shape {shape} holds {count} values but contents.{field} has {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    return np.asarray(values, dtype=DTYPES[datatype]).reshape(shape)


def request_payload(req: Any) -> tuple[dict[str, Any], dict[int, NDArray[Any]]]:
    """The OIP request object and its decoded input arrays, from a ``ModelInferRequest``.

    Raises:
        BadRequest: a tensor does not fit its shape, or raw and typed contents are mixed.
    """
    raw = req.raw_input_contents
    tensors = req.inputs
    if raw and len(raw) != len(tensors):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; "
            "send one per input, in order, or none (typed contents)"
        )
    inputs: list[dict[str, Any]] = []
    arrays: dict[int, NDArray[Any]] = {}
    for k, tensor in enumerate(tensors):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if shape and min(shape) < 0:
            raise BadRequest(f"inputs[{k}] ({name}): shape must be a list of sizes, got {shape}")
        inputs.append({"name": name, "datatype": datatype, "shape": shape})
        if raw:
            if tensor.HasField("contents"):
                raise BadRequest(
                    f"inputs[{k}] ({name}): has contents and raw_input_contents; send one"
                )
            blob, dtype = raw[k], NUMPY.get(datatype)
            if dtype is not None and len(blob) == dtype.itemsize * math.prod(shape):
                arrays[k] = np.frombuffer(blob, dtype=dtype).reshape(shape)  # the common case
            else:  # BYTES, BF16, or a size that does not fit: decode_raw names the problem
                arrays[k] = decode_raw(f"inputs[{k}] ({name})", datatype, shape, blob)
        else:
            arrays[k] = _typed(f"inputs[{k}] ({name})", tensor, shape)
    payload: dict[str, Any] = {"inputs": inputs, "parameters": _parameters(req.parameters)}
    if req.outputs:
        payload["outputs"] = [{"name": o.name} for o in req.outputs]
    if req.id:
        payload["id"] = req.id
    return payload, arrays


def response_message(reply: dict[str, Any]) -> Any:
    """A ``ModelInferResponse`` from the dispatcher's reply (outputs as raw contents)."""
    message = pb.ModelInferResponse(
        model_name=reply["model_name"],
        model_version=reply.get("model_version") or "",
        id=str(reply.get("id") or ""),
    )
    add = message.outputs.add
    for o in reply["outputs"]:
        add(name=o["name"], datatype=o["datatype"], shape=o["shape"])
    message.raw_output_contents.extend(
        [encode_raw(o["datatype"], o["data"]) for o in reply["outputs"]]
    )
    return message


# --- the common call: the head of the message read once, the raw bytes each time -------

_RAW_TAG = 0x3A  # field 7 (raw_input_contents), length-delimited
_CACHED_HEADS = 64


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; IndexError when it runs off."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def split_raw(message: bytes) -> tuple[bytes, list[memoryview]] | None:
    """A ``ModelInferRequest``'s wire format without its ``raw_input_contents``, and those
    contents in order; None when the message is not plain length-delimited and varint
    fields (the general parser then reads it, and names any problem).

    Example:
        >>> req = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"ab"])
        >>> head, raw = split_raw(req.SerializeToString())
        >>> head, [bytes(r) for r in raw]
        (b'\\n\\x01m', [b'ab'])
    """
    head: list[bytes] = []
    raw: list[memoryview] = []
    view = memoryview(message)  # the raw contents are not copied
    pos, end = 0, len(message)
    try:
        while pos < end:
            start = pos
            tag = message[pos]
            if tag >= 0x80:  # a field number beyond 15: not one of this message's
                return None
            pos += 1
            kind = tag & 7
            if kind == 2:
                n = message[pos]
                if n < 0x80:  # a length under 128: one byte, read here
                    pos += 1
                else:
                    n, pos = _varint(message, pos)
                if pos + n > end:
                    return None
                if tag == _RAW_TAG:
                    raw.append(view[pos : pos + n])
                else:
                    head.append(message[start : pos + n])
                pos += n
            elif kind == 0:
                _, pos = _varint(message, pos)
                head.append(message[start:pos])
            else:
                return None
    except IndexError:
        return None
    return (head[0] if len(head) == 1 else b"".join(head)), raw


class _Head(NamedTuple):
    """What a request head says, checked once: the model, the payload, each input's layout."""

    model_name: str
    model_version: str
    payload: dict[str, Any]
    layout: tuple[tuple[np.dtype[Any], tuple[int, ...], int], ...]  # dtype, shape, bytes


class Request(NamedTuple):
    model_name: str
    model_version: str
    payload: dict[str, Any]
    """Shared by every call with the same head: read it, never change it."""
    arrays: dict[int, NDArray[Any]]


def _head_of(head: bytes) -> _Head | None:
    """The checked head, or None when the general path must answer (it names problems)."""
    try:
        req = pb.ModelInferRequest.FromString(head)
    except Exception:  # DecodeError: the general path raises it, as a 400
        return None
    layout = []
    for tensor in req.inputs:
        shape = tuple(tensor.shape)
        dtype = NUMPY.get(tensor.datatype)
        if dtype is None or tensor.HasField("contents") or (shape and min(shape) < 0):
            return None
        layout.append((dtype, shape, dtype.itemsize * math.prod(shape)))
    if not layout:
        return None
    payload: dict[str, Any] = {
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in req.inputs
        ],
        "parameters": _parameters(req.parameters),
    }
    if req.outputs:
        payload["outputs"] = [{"name": o.name} for o in req.outputs]
    if req.id:
        payload["id"] = req.id
    return _Head(req.model_name, req.model_version, payload, tuple(layout))


class RequestReader:
    """Reads the common ``ModelInferRequest`` with its head parsed once (one per server).

    :meth:`read` answers the model name, version, payload and arrays that
    ``pb.ModelInferRequest.FromString`` and :func:`request_payload` would, or None: then
    the caller takes that general path.
    """

    def __init__(self) -> None:
        self._heads: dict[bytes, _Head | None] = {}

    def read(self, message: bytes) -> Request | None:
        split = split_raw(message)
        if split is None:
            return None
        head_bytes, raw = split
        heads = self._heads
        if head_bytes in heads:
            head = heads[head_bytes]
        else:
            head = _head_of(head_bytes) if raw else None
            if len(heads) >= _CACHED_HEADS:
                heads.clear()
            heads[head_bytes] = head
        if head is None or len(raw) != len(head.layout):
            return None
        arrays: dict[int, NDArray[Any]] = {}
        for k, (dtype, shape, size) in enumerate(head.layout):
            blob = raw[k]
            if len(blob) != size:
                return None
            arrays[k] = np.frombuffer(blob, dtype=dtype).reshape(shape)
        return Request(head.model_name, head.model_version, head.payload, arrays)


def _uvarint(value: int) -> bytes:
    if value < 0x80:
        return _BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_BYTE = [bytes([b]) for b in range(256)]


def _len_prefixed(tag: int, data: bytes) -> bytes:
    return b"".join((_BYTE[tag], _uvarint(len(data)), data))


@functools.lru_cache(maxsize=256)
def _head_field(name: str, version: str, rid: str) -> bytes:
    return b"".join(
        _len_prefixed(tag, value.encode())
        for tag, value in ((0x0A, name), (0x12, version), (0x1A, rid))
        if value
    )


@functools.lru_cache(maxsize=256)
def _tensor_field(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    tensor = [_len_prefixed(0x0A, name.encode()) if name else b""]
    if datatype:
        tensor.append(_len_prefixed(0x12, datatype.encode()))
    if shape:
        tensor.append(_len_prefixed(0x1A, b"".join(_uvarint(d) for d in shape)))
    return _len_prefixed(0x2A, b"".join(tensor))


def encode_response(reply: dict[str, Any]) -> bytes:
    """The wire format of :func:`response_message`'s message, written directly (the
    fields that repeat from call to call encoded once).

    Example:
        >>> reply = {"model_name": "m", "model_version": "1", "outputs": []}
        >>> encode_response(reply) == response_message(reply).SerializeToString()
        True
    """
    parts = [
        _head_field(
            reply["model_name"], reply.get("model_version") or "", str(reply.get("id") or "")
        )
    ]
    blobs = []
    for o in reply["outputs"]:
        shape = tuple(o["shape"])
        if shape and min(shape) < 0:  # not a size (never from the encoders): as protobuf does
            return response_message(reply).SerializeToString()  # type: ignore[no-any-return]
        parts.append(_tensor_field(o["name"], o["datatype"], shape))
        blobs.append(_len_prefixed(0x32, encode_raw(o["datatype"], o["data"])))
    return b"".join(parts + blobs)
