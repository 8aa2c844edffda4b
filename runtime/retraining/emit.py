"""Where the loop's announcements go: the broker, by Kafka or by its HTTP ingress.

A training that ends in the background has no HTTP request to reply to, so the loop sends
``mlfn.model.published`` / ``mlfn.model.rejected`` to the broker itself:

- locally (``mlfn dev``, tests): produced in Kafka's binary binding to the broker's topic
  ``knative-broker-<ns>-<broker>``, exactly as a dispatcher puts a reply there;
- on a cluster: POSTed in HTTP binary mode to the broker's ingress URL
  (``settings.loop_broker_url``), as any Knative event producer does.

:func:`emitter_for` picks one from the settings; an :class:`Emitter` is any callable.
Under ``mlfn dev`` an instance may start before the embedded broker has a port; then the
address is read, at the first announcement, from the platform's run file
(``<home>/platform/dev.json``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import requests

from eventing import codec
from eventing.broker import broker_topic
from eventing.codec import CloudEvent
from runtime.errors import MlfnError
from runtime.settings import Settings

__all__ = ["EmitError", "Emitter", "HttpEmitter", "KafkaEmitter", "emitter_for"]

log = logging.getLogger(__name__)

Emitter = Callable[[CloudEvent], None]


class EmitError(MlfnError):
    """An announcement could not be sent; the cause is chained."""


class KafkaEmitter:
    """Produces events to the broker's Kafka topic (binary mode), waiting for the ack."""

    def __init__(self, bootstrap: str, topic: str, *, partitions: int = 4) -> None:
        from eventing.producer import EventProducer

        self.topic = topic
        self._producer = EventProducer(bootstrap, partitions=partitions)
        self._lock = threading.Lock()

    def __call__(self, event: CloudEvent) -> None:
        with self._lock:
            try:
                self._producer.send_record(self.topic, codec.to_kafka_binary(event))
                self._producer.flush()
            except MlfnError as err:
                raise EmitError(f"cannot produce {event['type']} to {self.topic}: {err}") from err

    def close(self) -> None:
        self._producer.close()


class HttpEmitter:
    """POSTs events in HTTP binary mode to a broker ingress (a Knative Broker URL)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def __call__(self, event: CloudEvent) -> None:
        msg = codec.to_http_binary(event)
        try:
            resp = self._session.post(
                self.url, headers=msg.headers, data=msg.body, timeout=self.timeout_s
            )
        except requests.RequestException as err:
            raise EmitError(f"cannot POST {event['type']} to {self.url}: {err}") from err
        if resp.status_code >= 300:
            raise EmitError(
                f"the broker at {self.url} answered {resp.status_code} to {event['type']}: "
                f"{resp.text[:200]}; check MLFN_LOOP_BROKER_URL"
            )

    def close(self) -> None:
        self._session.close()


class _LazyKafkaEmitter:
    """A :class:`KafkaEmitter` whose bootstrap comes from the ``mlfn dev`` run file."""

    def __init__(self, run_file: Path, topic: str, partitions: int) -> None:
        self.run_file = run_file
        self.topic = topic
        self.partitions = partitions
        self._inner: KafkaEmitter | None = None
        self._lock = threading.Lock()

    def __call__(self, event: CloudEvent) -> None:
        with self._lock:
            if self._inner is None:
                try:
                    bootstrap = json.loads(self.run_file.read_text()).get("bootstrap")
                except (OSError, ValueError):
                    bootstrap = None
                if not bootstrap:
                    _log_only(event)
                    return
                self._inner = KafkaEmitter(bootstrap, self.topic, partitions=self.partitions)
        self._inner(event)

    def close(self) -> None:
        with self._lock:
            if self._inner is not None:
                self._inner.close()
                self._inner = None


def _log_only(event: CloudEvent) -> None:
    log.warning(
        "no broker configured: %s for %s is only logged; set MLFN_BOOTSTRAP_SERVERS "
        "or MLFN_LOOP_BROKER_URL so inference functions hear of new versions",
        event["type"],
        event.get("subject"),
    )


def emitter_for(settings: Settings, broker: str | None = "default") -> Emitter:
    """The emitter the settings call for: HTTP ingress, Kafka, or a log line.

    Args:
        settings: ``loop_broker_url`` wins; else ``bootstrap_servers`` (Kafka).
        broker: the broker name (the function's ``reply_to_broker``); None: log only.
    """
    if broker is None:
        return _log_only
    if settings.loop_broker_url:
        return HttpEmitter(settings.loop_broker_url)
    topic = broker_topic(settings.namespace, broker)
    if settings.bootstrap_servers:
        return KafkaEmitter(settings.bootstrap_servers, topic, partitions=settings.partitions)
    return _LazyKafkaEmitter(
        settings.home / "platform" / "dev.json", topic, partitions=settings.partitions
    )
