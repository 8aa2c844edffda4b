"""Trigger filters in Knative's dialect, compiled once into predicates over attributes.

``spec.filters`` (Knative's newer dialect) is a list of filter expressions that must all
match; each expression is exactly one of:

- ``{"exact": {attr: value}}``: the attribute exists and equals ``value``;
- ``{"prefix": {attr: value}}`` / ``{"suffix": {attr: value}}``: it starts / ends with it;
- ``{"all": [expr, ...]}``: every nested expression matches;
- ``{"any": [expr, ...]}``: at least one matches;
- ``{"not": expr}``: the nested expression does not match.

With several attributes in one ``exact``/``prefix``/``suffix`` map, all must match. The
legacy ``spec.filter.attributes`` is a map of exact matches where the empty string matches
any value (even a missing attribute). When ``filters`` is set, ``attributes`` is ignored,
as in Knative. No filter at all matches every event. CESQL is not supported.

Example:
    >>> match = compile_filter([{"prefix": {"type": "mlfn."}}, {"not": {"exact": {"source": "x"}}}])
    >>> match({"type": "mlfn.features", "source": "/p"})
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eventing.errors import FilterError

__all__ = ["Predicate", "compile_filter", "compile_trigger"]

Predicate = Callable[[Mapping[str, Any]], bool]
"""A compiled filter: takes an event's attributes (and extensions), says if it matches."""

_DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not")


def _text(attrs: Mapping[str, Any], name: str) -> str | None:
    v = attrs.get(name)
    return None if v is None else str(v)


def _string_map(kind: str, body: Any, where: str) -> dict[str, str]:
    if not isinstance(body, Mapping) or not body:
        raise FilterError(
            f"{where}: {kind!r} takes a non-empty map of attribute name to value, got {body!r}"
        )
    out: dict[str, str] = {}
    for k, v in body.items():
        if not isinstance(k, str) or not k:
            raise FilterError(f"{where}: {kind!r} has an invalid attribute name {k!r}")
        if not isinstance(v, str) or v == "":
            raise FilterError(
                f"{where}: {kind}.{k} must be a non-empty string, got {v!r} "
                "(Knative rejects empty values in the filters dialect)"
            )
        out[k.lower()] = v
    return out


def _compile_one(expr: Any, where: str) -> Predicate:
    if not isinstance(expr, Mapping) or len(expr) != 1:
        keys = list(expr) if isinstance(expr, Mapping) else type(expr).__name__
        raise FilterError(
            f"{where}: a filter expression must have exactly one of {', '.join(_DIALECTS)}; got {keys}"
        )
    ((kind, body),) = expr.items()
    if kind == "cesql":
        raise FilterError(
            f"{where}: the 'cesql' dialect is not supported; use {', '.join(_DIALECTS)}"
        )
    if kind in ("exact", "prefix", "suffix"):
        pairs = tuple(_string_map(kind, body, where).items())
        if kind == "exact":
            return lambda a: all(_text(a, k) == v for k, v in pairs)
        if kind == "prefix":
            return lambda a: all((_text(a, k) or "").startswith(v) and k in a for k, v in pairs)
        return lambda a: all((_text(a, k) or "").endswith(v) and k in a for k, v in pairs)
    if kind in ("all", "any"):
        if not isinstance(body, Sequence) or isinstance(body, str | bytes) or not body:
            raise FilterError(f"{where}: {kind!r} takes a non-empty list of filter expressions")
        subs = [_compile_one(e, f"{where}.{kind}[{i}]") for i, e in enumerate(body)]
        if kind == "all":
            return lambda a: all(p(a) for p in subs)
        return lambda a: any(p(a) for p in subs)
    if kind == "not":
        sub = _compile_one(body, f"{where}.not")
        return lambda a: not sub(a)
    raise FilterError(
        f"{where}: unknown filter dialect {kind!r}; use one of {', '.join(_DIALECTS)}"
    )


def compile_filter(filters: Sequence[Mapping[str, Any]], where: str = "filters") -> Predicate:
    """Compile Knative ``spec.filters``: every expression must match (empty: match all).

    Raises:
        FilterError: an expression is not valid dialect; the message says where.
    """
    preds = [_compile_one(e, f"{where}[{i}]") for i, e in enumerate(filters)]
    return lambda a: all(p(a) for p in preds)


def compile_attributes(attributes: Mapping[str, str]) -> Predicate:
    """Compile the legacy ``spec.filter.attributes``: exact matches, ``""`` matches anything."""
    pairs = tuple((k.lower(), v) for k, v in attributes.items() if v != "")
    return lambda a: all(_text(a, k) == v for k, v in pairs)


def compile_trigger(
    filters: Sequence[Mapping[str, Any]], attributes: Mapping[str, str], where: str = "trigger"
) -> Predicate:
    """A trigger's predicate: ``filters`` when given, else the legacy ``attributes``."""
    if filters:
        return compile_filter(filters, f"{where}.filters")
    return compile_attributes(attributes)


__all__ += ["compile_attributes"]
