"""Logs: JSON for machines, short human lines on a terminal, a request id on both.

Call :func:`configure` once at an entry point; set the id for a unit of work with
:func:`request_context`. Every record logged inside it carries ``request_id``.

Formats (``MLFN_LOG_FORMAT``): ``json`` (one object per line, what log collectors read),
``text`` (``12:04:05.123 serving  revision predict-00001 created``, coloured by level when
the stream is a terminal and colour is not turned off), and ``auto``, the default: text on
a terminal, JSON otherwise.

Known noise of a healthy start is demoted to debug, in every format (:class:`QuietNoise`):
kafka-python logs a *cancelled* metadata refresh (a consumer group rebalancing, a client
closing) as an error, and its selector warns when a step of its I/O loop is slow (a busy
machine). A refresh that failed for any other reason, a broker that is down, stays an error.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Literal

__all__ = [
    "LOG_FORMATS",
    "LogFormat",
    "QuietNoise",
    "configure",
    "current_request_id",
    "request_context",
    "resolve_format",
]

LogFormat = Literal["json", "text", "auto"]
"""``MLFN_LOG_FORMAT``: ``auto`` is text on a terminal, JSON otherwise."""
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text", "auto")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def current_request_id() -> str | None:
    return _request_id.get()


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extras."""

    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
        }
        rid = _request_id.get()
        if rid is not None:
            out["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_COLOURS = {"DEBUG": "2", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}
_OURS = ("localplatform.", "eventing.", "runtime.", "knative.", "mlfn.")


def component(name: str, static: dict[str, Any] | None = None) -> str:
    """A short name for where a record comes from.

    ``function`` when the process serves one, the last part of mlfn's own logger names
    (``localplatform.serving`` -> ``serving``), the top package of anyone else's
    (``kafka.cluster`` -> ``kafka``).
    """
    if static and static.get("function"):
        return str(static["function"])
    if name.startswith(_OURS):
        return name.rsplit(".", 1)[-1]
    return name.split(".", 1)[0]


class TextFormatter(logging.Formatter):
    """Short human lines: ``HH:MM:SS.mmm component message key=value``; level if not info."""

    def __init__(self, static: dict[str, Any] | None = None, *, colour: bool = False) -> None:
        super().__init__()
        self.static = static or {}
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        when += f".{int(record.msecs):03d}"
        rid = _request_id.get()
        extras = [
            f"{k}={_short(v)}"
            for k, v in vars(record).items()
            if k not in _RESERVED and not k.startswith("_")
        ]
        message = record.getMessage()
        if rid:
            message = f"[{rid}] {message}"
        level = "" if record.levelno == logging.INFO else record.levelname.lower() + " "
        head = f"{when} {component(record.name, self.static):<11}"
        body = level + message + ("  " + " ".join(extras) if extras else "")
        if self.colour:
            head = f"\x1b[2m{head}\x1b[0m"
            code = _COLOURS.get(record.levelname)
            if code:
                body = f"\x1b[{code}m{body}\x1b[0m"
        line = f"{head} {body}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class QuietNoise(logging.Filter):
    """Demote third-party noise of a healthy start to debug; drop it below ``level``.

    - kafka-python's ``Metadata refresh: failed Cancelled`` (error): a request cancelled
      because its connection closed on purpose (rebalance, client shutdown); kafka-python
      retries it. Any other failure (``KafkaConnectionError``, ``NodeNotReadyError``: the
      broker is down) stays an error.
    - kafka-python's selector warning that a task "is blocking the event loop": a slow step
      on a busy machine, not a fault of the platform.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    @staticmethod
    def is_noise(record: logging.LogRecord) -> bool:
        if record.name == "kafka.cluster" and str(record.msg).startswith(
            "Metadata refresh: failed"
        ):
            args = record.args if isinstance(record.args, tuple) else ()
            return bool(args) and type(args[0]).__name__ == "Cancelled"
        return record.name.startswith("kafka.net") and "blocking the event loop" in str(record.msg)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and self.is_noise(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.level


def resolve_format(fmt: str, stream: IO[str]) -> Literal["json", "text"]:
    """``json`` or ``text`` for ``fmt`` (``auto``: text when ``stream`` is a terminal).

    Raises:
        ValueError: ``fmt`` is not one of json, text, auto.
    """
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    if fmt not in ("json", "text"):
        raise ValueError(f"log format {fmt!r} is not one of json, text, auto (MLFN_LOG_FORMAT)")
    return "json" if fmt == "json" else "text"


def configure(
    level: str = "INFO",
    fmt: str = "auto",
    *,
    no_colour: bool = False,
    stream: IO[str] | None = None,
    **static: Any,
) -> None:
    """Route the root logger to ``stream`` (default stderr) in ``json``, ``text`` or ``auto``.

    ``static`` fields (for example ``function="predict"``) go into every JSON record and
    name the component of text lines. Text is coloured when the stream is a terminal,
    unless ``no_colour`` (``NO_COLOR`` set, see no-color.org).
    """
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    if resolve_format(fmt, out) == "json":
        handler.setFormatter(JsonFormatter(static))
    else:
        tty = getattr(out, "isatty", None)
        colour = not no_colour and tty is not None and bool(tty())
        handler.setFormatter(TextFormatter(static, colour=colour))
    threshold = logging.getLevelName(level.upper())
    handler.addFilter(QuietNoise(threshold if isinstance(threshold, int) else logging.INFO))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
