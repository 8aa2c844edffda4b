"""The output plan of an OIP reply, compiled once per response model: the fast encoder.

Pure, without I/O. :func:`plain_fields` decides at load whether a response model's
``model_dump(mode="json")`` is the same as reading its fields (numbers, booleans, lists
of them, optional; no serializers, aliases that change the dump, excluded or extra
fields); if so, :func:`encode_plain` builds the output tensors straight from the
function's responses, each a numpy array made once (``data`` is the flat array; the
bindings write it with ``tobytes`` or ``tolist``). Anything it does not cover (a value
that is ragged, empty, text, or a response of another type) returns None, and the
general path of :func:`runtime.server.oip.encode_outputs` answers, with the same result.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

__all__ = ["encode_plain", "plain_fields"]

_PLAIN = (bool, int, float)
_NUMERIC_KINDS = {"b": "BOOL", "i": "INT64", "f": "FP64"}


def _plain(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return len(inner) == 1 and _plain(inner[0])
    if origin is typing.Annotated:
        return _plain(args[0])
    if origin is list and len(args) == 1:
        return _plain(args[0])
    return annotation in _PLAIN


def plain_fields(model: type[BaseModel] | None) -> tuple[str, ...] | None:
    """The fields whose values are their JSON dump (in dump order), or None if any is not.

    Example:
        >>> class R(BaseModel):
        ...     predictions: list[int]
        ...     score: float | None = None
        >>> plain_fields(R)
        ('predictions', 'score')
    """
    config = model.model_config if model is not None else {}
    if model is None or config.get("extra") == "allow" or config.get("serialize_by_alias"):
        return None
    decorators = model.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers or model.model_computed_fields:
        return None
    fields = model.model_fields
    if any(f.exclude or not _plain(f.annotation) for f in fields.values()):
        return None
    return tuple(n for n in fields if n != "model_version")  # the reply carries the version


def encode_plain(
    results: Sequence[Any],
    model: type[BaseModel],
    fields: tuple[str, ...],
    wanted: list[str] | None,
    *,
    whole: bool,
) -> list[dict[str, Any]] | None:
    """Output tensors (``data``: a flat numpy array), as ``encode_outputs`` would make them
    from the dumped responses; or None where it would take its general path."""
    if not results:
        return None
    for r in results:
        if type(r) is not model:
            return None
    outputs = []
    for name in fields if wanted is None else [n for n in fields if n in wanted]:
        column = [getattr(r, name) for r in results]
        if column.count(None) == len(column):  # None in every response: left out
            continue
        try:
            array = np.asarray(column[0] if whole else column)
        except (ValueError, OverflowError, TypeError):
            return None
        dtype = _NUMERIC_KINDS.get(array.dtype.kind)
        if dtype is None or not array.size:
            return None
        outputs.append(
            {
                "name": name,
                "datatype": dtype,
                "shape": list(array.shape) or [1],
                "data": array.ravel(),
            }
        )
    return outputs
