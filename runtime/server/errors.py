"""Protocol errors: every status code the server answers with is decided here.

Handlers raise :class:`HttpError` subclasses (or let any other exception escape); the
WSGI layer turns them into a short JSON body ``{"error": {"code", "message", "id", ...}}``
through :func:`render`. The gRPC binding answers the same errors with the gRPC status
code each class names beside its HTTP status (:func:`grpc_code`). A client never sees a
traceback.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from pydantic import ValidationError

from runtime.errors import MlfnError

__all__ = [
    "GRPC_STATUS",
    "BadRequest",
    "HttpError",
    "InternalError",
    "MethodNotAllowed",
    "NotFound",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "from_validation",
    "grpc_code",
    "grpc_status",
    "new_error_id",
    "render",
]


class HttpError(MlfnError):
    """An error with its HTTP status, a stable machine code and a message for humans."""

    status = 500
    code = "internal"
    grpc = "INTERNAL"
    """The ``grpc.StatusCode`` name the gRPC binding answers with."""

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class BadRequest(HttpError):
    status, code, grpc = 400, "bad_request", "INVALID_ARGUMENT"


class NotFound(HttpError):
    status, code, grpc = 404, "not_found", "NOT_FOUND"


class MethodNotAllowed(HttpError):
    status, code, grpc = 405, "method_not_allowed", "UNIMPLEMENTED"

    def __init__(self, method: str, path: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"{method} is not allowed on {path}; use {', '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )


class PayloadTooLarge(HttpError):
    status, code, grpc = 413, "payload_too_large", "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(HttpError):
    status, code, grpc = 415, "unsupported_media_type", "INVALID_ARGUMENT"


class Overloaded(HttpError):
    """Shed: at containerConcurrency with the queue full (or a queued request timed out).

    ``reason`` labels ``mlfn_requests_shed_total``: ``queue_full`` or ``queue_timeout``.
    """

    status, code, grpc = 503, "overloaded", "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after: int = 1, reason: str = "queue_full") -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.reason = reason


class NotReady(HttpError):
    status, code, grpc = 503, "not_ready", "UNAVAILABLE"


class InternalError(HttpError):
    """An exception escaped the user's function (or the server): logged with this id."""

    status, code, grpc = 500, "internal", "INTERNAL"


def new_error_id() -> str:
    return uuid.uuid4().hex[:16]


def new_request_id() -> str:
    """A request id for a request that came without one: 32 hex digits, like
    ``uuid4().hex`` (random, unique), at a quarter of its cost."""
    return os.urandom(16).hex()


def from_validation(err: ValidationError, where: str = "") -> BadRequest:
    """A 400 naming each offending field, e.g. ``body.pixels: Field required``."""
    fields = []
    for item in err.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in item["loc"]) or "body"
        fields.append({"field": f"{where}{loc}" if where else loc, "problem": item["msg"]})
    summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:5])
    more = f" (and {len(fields) - 5} more)" if len(fields) > 5 else ""
    if fields and fields[0]["problem"].startswith("Invalid JSON"):
        return BadRequest(f"malformed JSON: {fields[0]['problem']}", details={"fields": fields})
    return BadRequest(f"invalid request: {summary}{more}", details={"fields": fields})


def grpc_code(err: HttpError) -> str:
    """The ``grpc.StatusCode`` name for ``err`` (``INVALID_ARGUMENT`` for a 400, ...)."""
    return err.grpc


GRPC_STATUS = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
"""The number of each gRPC status code name, as it goes on the wire (``grpc-status``)."""


def grpc_status(err: HttpError) -> int:
    """The ``grpc-status`` number for ``err`` (3 for a 400, ...)."""
    return GRPC_STATUS[err.grpc]


def render(err: HttpError, error_id: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and JSON body of an error response."""
    body: dict[str, Any] = {"code": err.code, "message": err.message, "id": error_id}
    body.update(err.details)
    headers = {"Content-Type": "application/json", **err.headers}
    return err.status, headers, json.dumps({"error": body}).encode()
