"""Ping sources: Knative's ``PingSource`` semantics for ``mlfn dev`` and the rehearsal.

On a cluster, ``mlfn render`` turns a retrain policy's ``every_seconds`` into a
``PingSource`` (:mod:`knative.manifests.ping`) that POSTs a CloudEvent of type
``dev.knative.sources.ping`` to the function on a cron schedule. :class:`PingSources`
does the same locally, one thread per function, at the exact interval (cron's minute
floor is the cluster's limit, not the local one). A failed POST is logged and the next
ping comes on schedule, as with Knative: the stored retraining state makes a missed ping
harmless.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from eventing.delivery import HttpSender, Response
from runtime import events
from runtime.retraining.loop import PING
from runtime.spec import FunctionSpec

__all__ = ["PingSources", "PingTarget", "ping_event", "ping_targets"]

log = logging.getLogger("mlfn.eventing.ping")


@dataclass(frozen=True)
class PingTarget:
    """One function's ping: where it goes, how often, and its data."""

    name: str
    url: str
    every_seconds: float
    data: dict[str, str]
    namespace: str = "default"


def ping_targets(
    specs: Iterable[FunctionSpec], sink_for: Callable[[str], str], namespace: str = "default"
) -> list[PingTarget]:
    """A target per function whose retrain policy has ``every_seconds``."""
    out = []
    for spec in specs:
        policy = spec.retrain
        if policy is None or policy.every_seconds is None:
            continue
        data = {"model": policy.model, "reason": "every_seconds"}
        out.append(
            PingTarget(
                f"{spec.name}-ping", sink_for(spec.name), policy.every_seconds, data, namespace
            )
        )
    return out


def ping_event(target: PingTarget) -> events.CloudEvent:
    """The CloudEvent a PingSource sends (type ``dev.knative.sources.ping``)."""
    source = f"/apis/v1/namespaces/{target.namespace}/pingsources/{target.name}"
    return events.new_event(PING, source, target.data)


class PingSources:
    """Ping every target on its interval until :meth:`stop`.

    Args:
        targets: what to ping.
        timeout_s: per-POST timeout (a woken function may train before it answers).
    """

    def __init__(self, targets: Iterable[PingTarget], *, timeout_s: float = 600.0) -> None:
        self.targets = list(targets)
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sender = HttpSender(pool_size=max(1, len(self.targets)))
        self.sent = 0

    def ping(self, target: PingTarget) -> Response:
        """Send one ping now; the answer (errors come back as ``Response(None, ...)``)."""
        msg = events.to_http_binary(ping_event(target))
        r = self._sender.post(target.url, msg, self.timeout_s)
        self.sent += 1
        if not r.ok:
            log.warning(
                "ping of %s failed: %s", target.name, r.describe(), extra={"url": target.url}
            )
        return r

    def _run(self, target: PingTarget) -> None:
        log.info(
            "ping source started",
            extra={"ping": target.name, "every_seconds": target.every_seconds},
        )
        while not self._stop.wait(target.every_seconds):
            self.ping(target)
        log.info("ping source stopped: stop() was called", extra={"ping": target.name})

    def start(self) -> PingSources:
        for target in self.targets:
            t = threading.Thread(
                target=self._run, args=(target,), name=f"mlfn-{target.name}", daemon=True
            )
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        self._sender.close()

    def describe(self) -> list[dict[str, object]]:
        return [
            {
                "name": t.name,
                "url": t.url,
                "every_seconds": t.every_seconds,
                "data": json.dumps(t.data),
            }
            for t in self.targets
        ]
