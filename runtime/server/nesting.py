"""How deeply a request body nests, measured before any JSON parser sees it.

Python's ``json`` and the CloudEvents SDK parse recursively: a body of a few thousand
``[`` ends in ``RecursionError`` deep inside a decoder (a 500 blamed on the function),
and pydantic stops at its own limit with a message about recursion. :func:`check_depth`
answers every such body with one 400 that names the limit, before any parser runs.

The scan is linear and vectorised (numpy, loaded on first use): it finds the quotes that
are not escaped, keeps the brackets outside strings and counts them. It follows what a
JSON parser would reach, so that a body that is not JSON (the bytes of a binary-mode
CloudEvent, a binary tensor after its JSON header) is not blamed for brackets it happens
to contain: the scan stops at the first byte that cannot appear in JSON outside a string,
and at the end of the first complete value.

Most bodies (numbers, keys, strings without a backslash: a tensor request, a CloudEvents
batch) take a shorter way to the same answer: ``bytes.translate`` drops the bytes a JSON
parser may meet outside a string except brackets and quotes, the strings (and whatever
they hold) go with one regular expression, and when only brackets are left they are
counted (a 64-row request of 64 numbers: 24 KB in, 130 bytes counted). A byte left over
(one a parser stops at outside a string, a BOM or NUL of another encoding) or a backslash
sends the body the long way.
"""

from __future__ import annotations

import json
import re
from typing import Any

from runtime.server.errors import BadRequest

__all__ = ["check_depth", "json_depth"]

# bytes a JSON parser may meet outside a string (letters stay: true, null, NaN, Infinity)
_OUTSIDE_OK = b' \t\n\r[]{}:,"+-.0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'
_STRUCTURE = b'[]{}"'
# deleted by the short way: every byte allowed outside a string except brackets and quotes
_PLAIN = bytes(b for b in _OUTSIDE_OK if b not in _STRUCTURE)
_COUNT_FIRST_BYTES = 4096  # up to this size a body's brackets are counted before any scan
_OPENING = b"[{"
_STRINGS = re.compile(rb'"[^"]*"?')  # without backslashes a string ends at the next quote
_tables: tuple[Any, Any] | None = None


def _lookup_tables(np: Any) -> tuple[Any, Any]:
    """Per byte value: not allowed outside a string; and +1 / -1 for brackets."""
    global _tables
    if _tables is None:
        bad = np.ones(256, dtype=bool)
        bad[list(_OUTSIDE_OK)] = False
        step = np.zeros(256, dtype=np.int8)
        step[list(b"[{")] = 1
        step[list(b"]}")] = -1
        _tables = bad, step
    return _tables


def _unescaped(np: Any, quotes: Any, slashes: Any) -> Any:
    """The quotes not escaped: those after an even run of backslashes."""
    if not slashes.size:
        return quotes
    ordinal = np.arange(slashes.size)
    new_run = np.ones(slashes.size, dtype=bool)
    new_run[1:] = slashes[1:] != slashes[:-1] + 1
    run_start = np.maximum.accumulate(np.where(new_run, ordinal, 0))
    k = np.minimum(np.searchsorted(slashes, quotes - 1), slashes.size - 1)
    run = np.where(slashes[k] == quotes - 1, k - run_start[k] + 1, 0)
    return quotes[run % 2 == 0]


def _utf8(body: bytes) -> bytes:
    """``json.loads`` also reads UTF-16 and UTF-32 (and a BOM): scan what it would read."""
    if body[:1] in (b"\xef", b"\xfe", b"\xff") or b"\x00" in body[:4]:
        encoding = json.detect_encoding(body)
        if encoding != "utf-8":
            return body.decode(encoding, errors="replace").encode()
    return body


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects a JSON parser would reach in ``body``.

    Example:
        >>> json_depth(b'{"a": [1, [2]], "b": "[[[["}')
        3
    """
    short = _short_depth(body)
    return short if short is not None else _scanned_depth(body)


def _short_depth(body: bytes) -> int | None:
    """The short way, or None where it does not apply (a byte a parser stops at or that
    only a string may hold, a backslash, another encoding: a BOM or NUL stays in the
    skeleton)."""
    skeleton = body.translate(None, _PLAIN)
    if b"\\" in skeleton:
        return None
    if b'"' in skeleton:  # strings go first: what they hold ('/', ' ', any text) is theirs
        skeleton = _STRINGS.sub(b"", skeleton)
    if skeleton.translate(None, _STRUCTURE):
        return None
    if len(skeleton) <= 1024:  # a few hundred brackets: Python is quicker than numpy's calls
        depth = top = 0
        for byte in skeleton:  # only brackets are left
            depth += 1 if byte in _OPENING else -1
            if depth <= 0:  # the first value is complete (or never began)
                break
            if depth > top:
                top = depth
        return top
    import numpy as np

    _, step = _lookup_tables(np)
    return _depth_of(np, step[np.frombuffer(skeleton, dtype=np.uint8)])


def _scanned_depth(body: bytes) -> int:
    """The long way: every byte, strings and escapes found with numpy."""
    import numpy as np

    bad_byte, step = _lookup_tables(np)
    a = np.frombuffer(_utf8(body), dtype=np.uint8)
    quotes = np.flatnonzero(a == ord('"'))
    inside = None
    if quotes.size:  # 1 from an opening quote up to its closing one
        marker = np.zeros(a.size, dtype=np.uint8)
        marker[_unescaped(np, quotes, np.flatnonzero(a == ord("\\")))] = 1
        inside = np.bitwise_xor.accumulate(marker).view(bool)
    bad = bad_byte[a]
    if inside is not None:
        bad &= ~inside
    end = int(np.argmax(bad)) if bad.any() else a.size
    steps = step[a[:end]]
    if inside is not None:
        steps[inside[:end]] = 0
    return _depth_of(np, steps)


def _depth_of(np: Any, steps: Any) -> int:
    """The deepest level of the first value, from the +1 / -1 / 0 of each byte."""
    opened = np.flatnonzero(steps)[:1]
    if not opened.size:
        return 0
    depth = np.cumsum(steps[opened[0] :], dtype=np.int32)
    closed = np.argmax(depth <= 0)  # the first value is complete (or never began)
    if depth[closed] <= 0:
        depth = depth[: closed + 1]
    return max(0, int(depth.max()))


def check_depth(body: bytes, limit: int) -> None:
    """Raise a 400 when ``body`` nests arrays and objects deeper than ``limit``.

    A body with at most ``limit`` opening brackets is accepted after counting them
    (above 4 KB, when the short way applies, it goes first: it is the cheaper pass).

    Raises:
        BadRequest: the body nests deeper than ``limit`` levels.
    """
    # a large body of numbers: the short way costs less than counting its brackets first
    depth = _short_depth(body) if len(body) > _COUNT_FIRST_BYTES else None
    if depth is None:
        if body.count(b"[") + body.count(b"{") <= limit:
            return
        depth = json_depth(body)
    if depth > limit:
        raise BadRequest(
            f"JSON nested deeper than {limit} levels (the body reaches {depth}); "
            "send flatter data or raise MLFN_MAX_JSON_DEPTH",
            details={"max_depth": limit},
        )
