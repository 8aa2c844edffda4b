"""HTTP delivery with Knative's retry semantics: one POST, and the retry loop around it.

:func:`deliver` is pure logic over injected ``send``/``wait``/``record_failure``
callables, so tests drive it without a clock or a network. :class:`HttpSender` is the
thin HTTP client (urllib3, pooled connections, per-attempt timeout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import urllib3

from runtime.events import HttpMessage
from runtime.spec import Delivery

__all__ = ["HttpSender", "Outcome", "Response", "deliver", "is_retryable"]

_RETRYABLE = frozenset({404, 408, 409, 429})


@dataclass(frozen=True, slots=True)
class Response:
    """What one attempt got: a status and body, or ``error`` when no response came."""

    status: int | None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        if self.status is None:
            return f"no response: {self.error}"
        return f"HTTP {self.status}"


def is_retryable(r: Response) -> bool:
    """Knative retries connection errors, timeouts, 404, 408, 409, 429 and 5xx."""
    return r.status is None or r.status in _RETRYABLE or r.status >= 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of a delivery: delivered, or failed with the last response.

    ``failures`` counts failed attempts, including those made before a restart.
    """

    delivered: bool
    response: Response
    failures: int


def deliver(
    send: Callable[[], Response],
    delivery: Delivery,
    *,
    failures_before: int = 0,
    record_failure: Callable[[int], None] = lambda n: None,
    wait: Callable[[float], bool],
) -> Outcome | None:
    """Attempt delivery until success, a non-retryable answer, or ``delivery.retry`` retries.

    Args:
        send: makes one attempt.
        delivery: retry count and backoff.
        failures_before: failed attempts already made (carried across restarts).
        record_failure: called with the failure count before each backoff, to persist it.
        wait: sleeps the given seconds; returns False when the dispatcher is stopping.

    Returns:
        The outcome, or None when stopped during a backoff (nothing may be committed).
    """
    failures = failures_before
    if failures > delivery.retry:
        return Outcome(False, Response(None, error="retries exhausted before a restart"), failures)
    while True:
        r = send()
        if r.ok:
            return Outcome(True, r, failures)
        failures += 1
        if not is_retryable(r) or failures > delivery.retry:
            return Outcome(False, r, failures)
        record_failure(failures)
        if not wait(delivery.backoff(failures).total_seconds()):
            return None


class HttpSender:
    """POSTs messages over pooled keep-alive connections; never raises for HTTP outcomes."""

    def __init__(self, pool_size: int = 64) -> None:
        self._pool = urllib3.PoolManager(maxsize=pool_size, block=False, retries=False)

    def post(self, url: str, msg: HttpMessage, timeout_s: float | None) -> Response:
        """One attempt. Connection errors and timeouts come back as ``Response(None, error=...)``."""
        try:
            r = self._pool.request(
                "POST",
                url,
                body=msg.body,
                headers=msg.headers,
                timeout=urllib3.Timeout(total=timeout_s) if timeout_s else None,
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as err:
            return Response(None, error=f"{type(err).__name__}: {err}")
        return Response(r.status, r.data or b"", {k.lower(): v for k, v in r.headers.items()})

    def close(self) -> None:
        self._pool.clear()
