"""Where the loop's announcements go: an :data:`Emitter` chosen by an :data:`EmitterFactory`.

A training that ends in the background has no HTTP request to reply to, so the loop sends
``mlfn.model.published`` / ``mlfn.model.rejected`` to the broker itself. How depends on
where the function runs, and the runtime knows only the transports of its own floor:

- on a cluster: POSTed in HTTP binary mode to the broker's ingress URL
  (``MLFN_LOOP_BROKER_URL``), as any Knative event producer does (:class:`HttpEmitter`);
- locally (``mlfn dev``, ``mlfn serve`` beside a Kafka): produced to the broker's Kafka
  topic. That emitter lives in :mod:`eventing.sinks`; whoever starts the server passes
  its factory in (``emitters=``), as the command line and the local platform do.

Without either, an announcement is logged and dropped, with a warning saying what to set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import urllib3

from runtime import events
from runtime.errors import MlfnError
from runtime.events import CloudEvent
from runtime.settings import RuntimeSettings

__all__ = [
    "EmitError",
    "Emitter",
    "EmitterFactory",
    "HttpEmitter",
    "default_emitters",
    "log_only",
]

log = logging.getLogger(__name__)

Emitter = Callable[[CloudEvent], None]
"""Sends one announcement; raises :class:`EmitError` when it cannot."""

EmitterFactory = Callable[[str | None], Emitter]
"""The emitter for a function's ``reply_to_broker`` (None: the function drops replies)."""


class EmitError(MlfnError):
    """An announcement could not be sent; the cause is chained."""


class HttpEmitter:
    """POSTs events in HTTP binary mode to a broker ingress (a Knative Broker URL)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._pool = urllib3.PoolManager(retries=False)

    def __call__(self, event: CloudEvent) -> None:
        msg = events.to_http_binary(event)
        try:
            resp = self._pool.request(
                "POST", self.url, headers=msg.headers, body=msg.body, timeout=self.timeout_s
            )
        except urllib3.exceptions.HTTPError as err:
            raise EmitError(f"cannot POST {event['type']} to {self.url}: {err}") from err
        if resp.status >= 300:
            raise EmitError(
                f"the broker at {self.url} answered {resp.status} to {event['type']}: "
                f"{resp.data[:200].decode('utf-8', 'replace')}; check MLFN_LOOP_BROKER_URL"
            )

    def close(self) -> None:
        self._pool.clear()


def log_only(event: CloudEvent) -> None:
    """The emitter of last resort: a warning naming what to configure."""
    log.warning(
        "no broker configured: %s for %s is only logged; set MLFN_BOOTSTRAP_SERVERS "
        "or MLFN_LOOP_BROKER_URL so inference functions hear of new versions",
        event["type"],
        event.get("subject"),
    )


def default_emitters(settings: RuntimeSettings) -> EmitterFactory:
    """The runtime's own choice: the broker ingress URL when set, else a log line."""

    def factory(broker: str | None) -> Emitter:
        if broker is None:
            return log_only
        if settings.loop.broker_url:
            return HttpEmitter(settings.loop.broker_url)
        return log_only

    return factory
