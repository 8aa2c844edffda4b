"""Open Inference Protocol v2 (KServe/Triton REST) tensors <-> rows of the request model.

The mapping, pure and without I/O:

* Request: each input tensor names a field of the request model. If the tensor's rank is
  the field's rank plus one, ``shape[0]`` counts requests and request ``i`` gets
  ``tensor[i]``; if it equals the field's rank (a field that is itself a list of rows,
  like ``instances: list[list[float]]``), the whole tensor is one request. ``data`` may
  be flat (row-major, as the protocol prefers) or nested. ``parameters`` fill the
  non-tensor fields of every request (``{"probabilities": true}``); other parameters
  (the protocol's own, like ``binary_data_output``) are not passed on. A request with
  exactly one tensor is taken under any name when the request model has exactly one
  required field (clients often send ``input-0``).
* Binary tensors (:mod:`runtime.server.oip_binary`, and gRPC's raw contents) arrive as
  numpy arrays by input index; their rows come from the array, at numpy's speed.
* Response: each field of the response model becomes an output tensor of the same name,
  shaped ``[requests, *value shape]`` (or the value's own shape for one whole request),
  datatype from the values (``BOOL``, ``INT64``, ``FP64``, ``BYTES``), data flattened
  row-major; fields that are None are left out.
"""

from __future__ import annotations

import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from runtime.server.errors import BadRequest

__all__ = ["decode_inputs", "encode_outputs", "one_numeric_input", "tensor_metadata"]

_MAX_RANK = 32  # beyond any model's tensors; bounds the arithmetic on shapes
_PY_TO_OIP = {bool: "BOOL", int: "INT64", float: "FP64", str: "BYTES"}


def _describe(annotation: Any) -> tuple[str, list[int]]:
    """Datatype and per-row shape (-1 for variable) of a field annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _describe(inner[0]) if len(inner) == 1 else ("BYTES", [])
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin in (list, tuple, typing.Sequence) and args:
        dtype, shape = _describe(args[0])
        return dtype, [-1, *shape]
    return _PY_TO_OIP.get(annotation, "BYTES"), []


def tensor_metadata(model: type[BaseModel]) -> list[dict[str, Any]]:
    """``[{"name", "datatype", "shape"}]`` for each field, as ``/v2/models/{name}`` lists them."""
    out = []
    for name, field in model.model_fields.items():
        dtype, shape = _describe(field.annotation)
        out.append({"name": name, "datatype": dtype, "shape": [-1, *shape]})
    return out


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _reshape(flat: list[Any], shape: list[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [_reshape(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def decode_inputs(
    payload: Any,
    model: type[BaseModel],
    arrays: Mapping[int, NDArray[Any]] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Rows (plain dicts, not yet validated) from an OIP inference request body.

    ``arrays``: inputs already decoded from raw bytes, by index in ``inputs`` (their
    ``data`` is not read). Returns the rows and whether the tensors held one whole
    request (no request dimension).

    Raises:
        BadRequest: the body is not an inference request, or its tensors do not fit.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise BadRequest('an inference request is a JSON object with an "inputs" list of tensors')
    inputs: list[Any] = payload["inputs"]
    if arrays and len(inputs) == 1:
        fast = _one_array(inputs[0], model, arrays.get(0), payload.get("parameters"))
        if fast is not None:
            return fast
    ranks = _ranks(model)  # the field names too, read once per model
    fields = list(ranks)
    if not inputs:
        raise BadRequest(f'"inputs" is empty; send one tensor per field: {", ".join(fields)}')
    params = payload.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest('"parameters" must be an object of request fields')
    columns: dict[str, list[Any]] = {}
    whole: bool | None = None
    fallback = _any_name_field(model) if len(inputs) == 1 else None
    for k, tensor in enumerate(inputs):
        array = arrays.get(k) if arrays else None
        name, values, is_whole = _column(k, tensor, model, fields, fallback, array)
        if whole is not None and is_whole != whole:
            raise BadRequest(
                f"inputs[{k}] ({name}) and inputs[0] disagree on the request dimension: "
                "give every input a leading request dimension, or none"
            )
        whole = is_whole
        n = len(values)
        if columns and n != len(next(iter(columns.values()))):
            raise BadRequest(
                f"inputs[{k}] ({name}) has {n} rows but inputs[0] has "
                f"{len(next(iter(columns.values())))}; shape[0] must agree across inputs"
            )
        columns[name] = values
    n = len(next(iter(columns.values())))
    extra = {k: v for k, v in params.items() if k in ranks and k not in columns}
    rows = [{**extra, **{name: col[i] for name, col in columns.items()}} for i in range(n)]
    return rows, bool(whole)


def _one_array(
    tensor: Any, model: type[BaseModel], array: NDArray[Any] | None, params: Any
) -> tuple[list[dict[str, Any]], bool] | None:
    """The common request, one numeric tensor already decoded: its rows at once, or None
    (then the general path decodes it, and names any problem)."""
    if params is not None and not isinstance(params, dict):
        return None
    found = _one_tensor(tensor, model, array)
    if found is None or array is None:
        return None
    name, whole = found
    columns = [array.tolist()] if whole else array.tolist()
    ranks = _ranks(model)
    extra = {k: v for k, v in params.items() if k in ranks and k != name} if params else None
    if extra:
        return [{**extra, name: v} for v in columns], whole
    return [{name: v} for v in columns], whole


def _one_tensor(
    tensor: Any, model: type[BaseModel], array: NDArray[Any] | None
) -> tuple[str, bool] | None:
    """The field one numeric tensor already decoded fills, and whether it holds one
    whole request (no request dimension); or None."""
    if array is None or array.dtype.kind not in "biuf" or not isinstance(tensor, dict):
        return None
    name = tensor.get("name")
    ranks = _ranks(model)
    if not isinstance(name, str):
        return None
    if name not in ranks:
        name = _any_name_field(model)
        if name is None:
            return None
    rank = ranks[name]
    if rank and array.ndim == rank:
        return name, True
    if array.ndim == rank + 1:
        return name, False
    return None


def one_numeric_input(
    payload: Any, model: type[BaseModel], arrays: Mapping[int, NDArray[Any]] | None
) -> tuple[str, list[NDArray[Any]], bool] | None:
    """The common request (one numeric tensor decoded from raw bytes, no parameters that
    fill fields): the field it fills, its value for each request, and whether the tensor
    held one whole request; None for any other request.

    Example:
        >>> class Req(BaseModel):
        ...     x: list[float]
        >>> payload = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32"}]}
        >>> name, values, whole = one_numeric_input(payload, Req, {0: np.zeros((2, 3))})
        >>> name, len(values), values[0].shape, whole
        ('x', 2, (3,), False)
    """
    if not arrays or not isinstance(payload, dict):
        return None
    inputs, params = payload.get("inputs"), payload.get("parameters")
    if not isinstance(inputs, list) or len(inputs) != 1:
        return None
    if params is not None and (
        not isinstance(params, dict) or not params.keys().isdisjoint(_ranks(model))
    ):
        return None
    array = arrays.get(0)
    found = _one_tensor(inputs[0], model, array)
    if found is None or array is None:
        return None
    name, whole = found
    return name, [array] if whole else list(array), whole


@functools.cache
def _ranks(model: type[BaseModel]) -> dict[str, int]:
    """Each field's rank per request (computed once per model: typing introspection is slow)."""
    return {n: len(_describe(f.annotation)[1]) for n, f in model.model_fields.items()}


@functools.cache
def _any_name_field(model: type[BaseModel]) -> str | None:
    """The field a lone tensor of any name fills: the only required one (or the only one)."""
    fields = model.model_fields
    required = [n for n, f in fields.items() if f.is_required()]
    if len(required) == 1:
        return required[0]
    return next(iter(fields)) if len(fields) == 1 else None


def _column(
    k: int,
    tensor: Any,
    model: type[BaseModel],
    fields: list[str],
    fallback: str | None,
    array: NDArray[Any] | None = None,
) -> tuple[str, list[Any], bool]:
    where = f"inputs[{k}]"
    if not isinstance(tensor, dict):
        raise BadRequest(f"{where} must be an object with name, shape, datatype and data")
    name, shape, data = tensor.get("name"), tensor.get("shape"), tensor.get("data")
    if not isinstance(name, str):
        raise BadRequest(f"{where}.name is missing; expected one of: {', '.join(fields)}")
    ranks = _ranks(model)
    if name not in ranks:
        if fallback is None:
            raise BadRequest(
                f"{where}: unknown input {name!r}; this model takes: {', '.join(fields)}"
            )
        name = fallback
    rank = ranks[name]
    if array is not None:
        return _array_column(where, name, rank, tensor.get("datatype"), array)
    if (
        not isinstance(shape, list)
        or not 0 < len(shape) <= _MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63 for d in shape)
    ):
        raise BadRequest(
            f"{where}.shape must be a non-empty list of sizes (int64, at most {_MAX_RANK}), "
            f"got {repr(shape)[:80]}"
        )
    if "data" not in tensor:
        raise BadRequest(f"{where}.data is missing")
    flat = _flatten(data)
    if len(flat) != math.prod(shape):
        raise BadRequest(
            f"{where} ({name}): shape {shape} holds {math.prod(shape)} values "
            f"but data has {len(flat)}"
        )
    rows = 1
    for d in shape[:-1]:  # [10**9, 0] holds no values but would build 10**9 empty rows
        rows *= d
        if rows > max(1, len(flat)):
            raise BadRequest(
                f"{where}.shape {shape} describes more rows than data has values "
                f"({len(flat)}); send the shape of the data"
            )
    if tensor.get("datatype") == "BYTES":
        flat = [v.decode() if isinstance(v, bytes) else v for v in flat]
    if rank and len(shape) == rank:
        return name, [_reshape(flat, shape)], True
    if len(shape) != rank + 1:
        raise _rank_error(where, name, shape, rank)
    per = math.prod(shape[1:])
    return (
        name,
        [_reshape(flat[i * per : (i + 1) * per], shape[1:]) for i in range(shape[0])],
        False,
    )


def _rank_error(where: str, name: str, shape: list[int], rank: int) -> BadRequest:
    return BadRequest(
        f"{where} ({name}) has shape {shape}, but {name} has rank {rank} per request: "
        f"send rank {rank + 1} (first dimension: requests)"
        + (f" or rank {rank} (one request)" if rank else "")
    )


def _utf8(where: str, array: NDArray[Any]) -> NDArray[Any]:
    try:
        return np.frompyfunc(lambda b: b.decode("utf-8"), 1, 1)(array)  # type: ignore[no-any-return]
    except UnicodeDecodeError as err:
        raise BadRequest(f"{where}: a BYTES element is not UTF-8 text: {err}") from None


def _array_column(
    where: str, name: str, rank: int, datatype: Any, array: NDArray[Any]
) -> tuple[str, list[Any], bool]:
    shape = list(array.shape)
    if datatype == "BYTES":
        array = _utf8(where, array)
    if rank and len(shape) == rank:
        return name, [array.tolist()], True
    if len(shape) != rank + 1:
        raise _rank_error(where, name, shape, rank)
    return name, array.tolist(), False


def _shape_of(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _datatype(values: list[Any]) -> str:
    leaf = values[0] if values else None
    if isinstance(leaf, bool):
        return "BOOL"
    if isinstance(leaf, int):
        return "FP64" if any(isinstance(v, float) for v in values) else "INT64"
    if isinstance(leaf, float):
        return "FP64"
    return "BYTES"


_NUMERIC_KINDS = {"b": "BOOL", "i": "INT64", "f": "FP64"}
_NUMERIC_VALUES = (list, int, float)


def _numeric(name: str, value: Any) -> dict[str, Any] | None:
    """The tensor of a rectangular numeric ``value`` in one numpy pass, or None (then the
    general path, which also handles ragged, empty, text and mixed values)."""
    if not isinstance(value, _NUMERIC_VALUES):
        return None
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError, TypeError):
        return None
    dtype = _NUMERIC_KINDS.get(array.dtype.kind)
    if dtype is None or not array.size:
        return None
    return {
        "name": name,
        "datatype": dtype,
        "shape": list(array.shape) or [1],
        "data": array.ravel().tolist(),
    }


def encode_outputs(
    responses: list[dict[str, Any]], wanted: list[str] | None = None, *, whole: bool = False
) -> list[dict[str, Any]]:
    """Output tensors, one per response field (or only those in ``wanted``).

    ``whole``: one response, encoded without a leading request dimension. Fields that are
    None in every response are left out.
    """
    if not responses:
        return []
    names = responses[0] if wanted is None else [n for n in responses[0] if n in wanted]
    outputs = []
    for name in names:
        column = [r.get(name) for r in responses]
        if column.count(None) == len(column):  # None in every response: left out
            continue
        value: Any = column[0] if whole else column
        numeric = _numeric(name, value)
        if numeric is not None:
            outputs.append(numeric)
            continue
        flat = _flatten(value)
        dtype = _datatype(flat)
        if dtype == "BYTES":
            flat = [v if isinstance(v, str) else json.dumps(v) for v in flat]
        outputs.append(
            {"name": name, "datatype": dtype, "shape": _shape_of(value) or [1], "data": flat}
        )
    return outputs
