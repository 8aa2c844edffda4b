"""The numeric lane: request bodies of numbers decoded straight to arrays, checked at once.

``PredictRequest.model_validate_json`` of a 64-row request (64 floats a row) takes about
340 us, and stacking its rows into an array for the model another 200 us; nearly all of
it is Python floats made, checked and read one at a time. For a request model whose
fields are rows of bounded floats (``list[list[float]]``, ``list[float]``) and plain
scalars (``bool``, ``int``, ``float``), :func:`lane_for` compiles a :class:`NumericLane`
once: ``orjson`` parses the body, numpy converts and checks each numeric field in one
pass (shape, lengths, bounds, finiteness), and the request is built with
``model_construct``. Each numeric field's value is a :class:`runtime.arrays.Rows`: the
same lists pydantic would make, keeping the checked float64 array for
:func:`runtime.stack`.

The lane only ever *accepts*: a body it is not sure of (anything unusual: a string, an
escape, ``null``, a boolean in a row, an extra or repeated key, a value out of bounds,
a ragged row, a number orjson does not read) returns None, and the caller validates it
with pydantic as before, with pydantic's errors. So the lane accepts a subset of what
pydantic accepts, with the same values, and every 400 is pydantic's (property-tested in
``tests/runtime/test_numeric_lane.py``).

Models the lane does not cover (validators, aliases, strict mode, extra fields allowed,
other types or constraints) get no lane: :func:`lane_for` returns None.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any

import annotated_types as at
import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import BaseModel, RootModel
from pydantic.fields import FieldInfo

from runtime.arrays import Rows

__all__ = ["MIN_BYTES", "MIN_ELEMENTS", "NumericLane", "lane_for"]

MIN_BYTES = 8192
"""Smaller bodies go straight to pydantic: for a few rows its decode is quicker than the
lane's fixed costs (numpy calls, the checks); at 64 features a row the lane starts to
win (with :func:`runtime.stack`) at some 10-20 rows, about 4-8 KB."""

MIN_ELEMENTS = 512
"""Smaller tensors (decoded from raw bytes) go to pydantic too: the lane's fixed cost
(about 8 us) is more than pydantic's for fewer than some 8 rows of 64 numbers."""

_BOUNDS = (at.Ge, at.Gt, at.Le, at.Lt)
# what numbers and structure are made of: dropped, what is left is counted (quotes, the
# "t" of true, the "f" of false, the "." of a float, backslashes) in one short pass
_NUMBERS = b"0123456789-+eE,:[]{} \t\n\r"


@dataclass(frozen=True)
class _Numbers:
    """Bounds on a number (or on every number of a row)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def hold(self, lo: float, hi: float) -> bool:
        """Whether every value between ``lo`` and ``hi`` (both finite) is within bounds."""
        return (
            (self.ge is None or lo >= self.ge)
            and (self.gt is None or lo > self.gt)
            and (self.le is None or hi <= self.le)
            and (self.lt is None or hi < self.lt)
        )


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # "bool", "int", "float", or "rows" (ndim 1 or 2)
    required: bool
    numbers: _Numbers
    lengths: tuple[tuple[int, int | None], ...]  # (min, max) of each list level, outer first
    key_letters: int  # how many "t" and "f" its key holds

    @property
    def ndim(self) -> int:
        return len(self.lengths)


class _Unsupported(Exception):
    """The model (or a field) is outside what the lane covers."""


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """A type without its ``Annotated`` layers, and their constraints."""
    found: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        tp, *extra = typing.get_args(tp)
        for item in extra:
            if isinstance(item, FieldInfo):
                if item.alias or item.validation_alias or item.default_factory is not None:
                    raise _Unsupported(f"an aliased or defaulted item {item}")
                found.extend(item.metadata)
            else:
                found.append(item)
    return tp, found


def _numbers(constraints: list[Any]) -> _Numbers:
    bounds: dict[str, float] = {}
    for c in constraints:
        if not isinstance(c, _BOUNDS):
            raise _Unsupported(f"constraint {c!r}")
        name = type(c).__name__.lower()
        value = getattr(c, name)
        if type(value) not in (int, float):
            raise _Unsupported(f"bound {value!r}")
        bounds[name] = value
    return _Numbers(**bounds)


def _lengths(constraints: list[Any]) -> tuple[tuple[int, int | None], list[Any]]:
    lo, hi, rest = 0, None, []
    for c in constraints:
        if isinstance(c, at.MinLen):
            lo = max(lo, c.min_length)
        elif isinstance(c, at.MaxLen):
            hi = c.max_length if hi is None else min(hi, c.max_length)
        else:
            rest.append(c)
    return (lo, hi), rest


def _field(name: str, info: FieldInfo) -> _Field:
    if info.alias not in (None, name) or info.validation_alias is not None:
        raise _Unsupported(f"field {name} has an alias")
    if info.default_factory is not None:
        raise _Unsupported(f"field {name} has a default factory")
    tp, constraints = _unwrap(info.annotation)
    constraints = [*info.metadata, *constraints]
    letters = name.count("t") + name.count("f")
    required = info.is_required()
    if tp is bool or tp is int or tp is float:
        default = info.default
        if not required and not (type(default) is tp or (tp is float and type(default) is int)):
            raise _Unsupported(f"field {name} has a default of another type")
        numbers = _numbers(constraints) if tp is not bool else _numbers([])
        if tp is bool and constraints:
            raise _Unsupported(f"field {name}: constraints on a bool")
        return _Field(name, tp.__name__, required, numbers, (), letters)
    lengths: list[tuple[int, int | None]] = []
    while typing.get_origin(tp) is list:
        if not required:
            raise _Unsupported(f"field {name}: a list with a default")
        level, constraints = _lengths(constraints)
        lengths.append(level)
        (tp,) = typing.get_args(tp)
        tp, inner = _unwrap(tp)
        if constraints:
            raise _Unsupported(f"field {name}: constraint {constraints[0]!r} on a list")
        constraints = inner
    if tp is not float or not 1 <= len(lengths) <= 2:
        raise _Unsupported(f"field {name}: {info.annotation}")
    return _Field(name, "rows", True, _numbers(constraints), tuple(lengths), letters)


def _plain_model(model: type[BaseModel]) -> None:
    config = model.model_config
    if issubclass(model, RootModel) or config.get("extra") not in (None, "ignore", "forbid"):
        raise _Unsupported("a root model, or extra fields allowed")
    for option in ("strict", "alias_generator", "validate_default"):
        if config.get(option):
            raise _Unsupported(f"model_config {option}")
    d = model.__pydantic_decorators__
    if d.validators or d.field_validators or d.root_validators or d.model_validators:
        raise _Unsupported("validators")
    if model.model_post_init is not BaseModel.model_post_init:
        raise _Unsupported("model_post_init")
    if model.__init__ is not BaseModel.__init__:
        raise _Unsupported("a custom __init__")


class NumericLane:
    """The compiled lane of one request model (build it with :func:`lane_for`)."""

    def __init__(self, model: type[BaseModel], fields: list[_Field]) -> None:
        self.model = model
        self._fields = fields
        self._names = frozenset(f.name for f in fields)
        self._required = frozenset(f.name for f in fields if f.required)
        # a "." in a key would count as a float's: then ints are always converted
        self._dots_are_numbers = not any("." in f.name for f in fields)

    def decode(self, body: bytes) -> BaseModel | None:
        """The request in ``body`` (a JSON object), or None: pydantic decides that one.

        Any body works here; the server only sends those of at least :data:`MIN_BYTES`.
        """
        rest = body.translate(None, _NUMBERS)
        if b"\\" in rest:  # an escape may spell a key (or a repeated one) differently
            return None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if type(data) is not dict or not data.keys() <= self._names:
            return None
        if rest.count(b'"') != 2 * len(data):  # the keys are the only strings, none repeated
            return None
        values: dict[str, Any] = {}
        arrays: list[tuple[str, list[Any], Any]] = []
        bools = floats = elements = letters = 0
        for f in self._fields:
            if f.name not in data:
                if f.required:
                    return None
                continue
            v = data[f.name]
            letters += f.key_letters
            kind = f.kind
            if kind == "rows":
                a = self._rows(f, v)
                if a is None:
                    return None
                elements += a.size
                arrays.append((f.name, v, a))
                continue
            t = type(v)
            if kind == "bool":
                if t is not bool:
                    return None
                bools += 1
            elif kind == "int":
                if t is not int or not f.numbers.hold(v, v):
                    return None
            else:
                if t is float:
                    floats += 1
                elif t is not int:
                    return None
                v = float(v)
                if not math.isfinite(v) or not f.numbers.hold(v, v):
                    return None
            values[f.name] = v
        # the only true/false tokens are the bool fields' values: none hides in a row
        if rest.count(b"t") + rest.count(b"f") != bools + letters:
            return None
        # every number of every row has a ".": all are floats already (else some are
        # ints, which pydantic turns into floats: then the array's floats are used)
        as_read = self._dots_are_numbers and rest.count(b".") == elements + floats
        for name, v, a in arrays:
            values[name] = Rows(v if as_read else a.tolist(), a)
        return self.model.model_construct(**values)

    def from_array(self, name: str, array: NDArray[Any]) -> BaseModel | None:
        """The request whose field ``name`` holds ``array`` (a tensor decoded from raw
        bytes) and whose other fields take their defaults; or None: pydantic decides.
        Any array works here; the server sends those of at least :data:`MIN_ELEMENTS`.

        Example:
            >>> class Req(BaseModel):
            ...     instances: list[list[float]]
            >>> lane_for(Req).from_array("instances", np.ones((1, 2), np.float32)).instances
            [[1.0, 1.0]]
        """
        f = next((f for f in self._fields if f.name == name), None)
        if f is None or f.kind != "rows" or array.dtype.kind not in "iuf":
            return None  # (pydantic reads a bool as a float; the lane leaves that to it)
        if not self._required <= {name}:
            return None
        a = self._checked(f, array.astype(np.float64))  # a copy: the body's buffer is not kept
        if a is None:
            return None
        values: dict[str, Any] = {name: Rows(a.tolist(), a)}
        return self.model.model_construct(**values)

    @classmethod
    def _rows(cls, f: _Field, v: Any) -> Any:
        """The checked float64 array of a rows field's value, or None."""
        if type(v) is not list:
            return None
        try:
            a = np.array(v, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):  # ragged, or not numbers
            return None
        return cls._checked(f, a)

    @staticmethod
    def _checked(f: _Field, a: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """``a`` if it has the field's shape and every value is finite and within bounds."""
        if a.ndim != f.ndim:
            return None
        for n, (lo, hi) in zip(a.shape, f.lengths, strict=True):
            if n < lo or (hi is not None and n > hi):
                return None
        if a.size == 0:
            return a
        low, high = float(a.min()), float(a.max())  # nan, from null, stays nan
        if not (math.isfinite(low) and math.isfinite(high)) or not f.numbers.hold(low, high):
            return None
        return a


def lane_for(model: type[BaseModel] | None) -> NumericLane | None:
    """The numeric lane of ``model``, or None when the model is outside what it covers.

    Example:
        >>> class Req(BaseModel):
        ...     instances: list[list[float]]
        >>> lane_for(Req).decode(b'{"instances": [[1.5, 2]]}').instances
        [[1.5, 2.0]]
    """
    if model is None or not isinstance(model, type) or not issubclass(model, BaseModel):
        return None
    try:
        _plain_model(model)
        fields = [_field(name, info) for name, info in model.model_fields.items()]
    except (_Unsupported, TypeError, ValueError):
        return None
    if not any(f.kind == "rows" for f in fields):
        return None  # nothing to gain over pydantic
    return NumericLane(model, fields)
