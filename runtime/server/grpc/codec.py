"""``ModelInferRequest``/``ModelInferResponse`` <-> the dispatcher's OIP request and reply.

Pure, without I/O. A request becomes the same ``payload`` (``inputs``, ``outputs``,
``parameters``, ``id``) and ``arrays`` (inputs decoded by index) that the REST binding
hands :meth:`runtime.server.dispatch.Dispatcher.oip_reply`; tensors come from
``raw_input_contents`` (decoded as the binary extension's bytes) or from the typed
``contents``. The reply's outputs always travel as ``raw_output_contents``, as Triton's
server sends them (both tritonclient and kserve read them).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.server.errors import BadRequest
from runtime.server.grpc import grpc_predict_v2_pb2 as pb
from runtime.server.oip_binary import DTYPES, NUMPY, decode_raw, encode_raw

__all__ = ["request_payload", "response_message"]

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
