"""Announcements to the broker's Kafka topic: the emitters the retraining loop gets locally.

:func:`emitters_for` is the :data:`~runtime.retraining.emit.EmitterFactory` that the
command line and the local platform hand to the server: the broker ingress URL wins
(``MLFN_LOOP_BROKER_URL``, a cluster), else Kafka's binary binding to the broker's topic
``knative-broker-<ns>-<broker>``, exactly as a dispatcher puts a reply there. Under
``mlfn dev`` an instance may start before the embedded broker has a port; then the
address is read, at the first announcement, from the platform's run file.
"""

from __future__ import annotations

import threading
from pathlib import Path

from eventing import codec
from eventing.broker import broker_topic
from eventing.settings import EventingRoot
from runtime.errors import MlfnError
from runtime.events import CloudEvent
from runtime.localstate import RunFileError, read_run_file
from runtime.retraining.emit import EmitError, Emitter, EmitterFactory, HttpEmitter, log_only

__all__ = ["KafkaEmitter", "emitters_for"]


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


class _LazyKafkaEmitter:
    """A :class:`KafkaEmitter` whose bootstrap comes from the ``mlfn dev`` run file."""

    def __init__(self, home: Path, topic: str, partitions: int) -> None:
        self.home = home
        self.topic = topic
        self.partitions = partitions
        self._inner: KafkaEmitter | None = None
        self._lock = threading.Lock()

    def __call__(self, event: CloudEvent) -> None:
        with self._lock:
            if self._inner is None:
                try:
                    bootstrap = read_run_file(self.home).get("bootstrap")
                except RunFileError:
                    bootstrap = None
                if not bootstrap:
                    log_only(event)
                    return
                self._inner = KafkaEmitter(str(bootstrap), self.topic, partitions=self.partitions)
        self._inner(event)

    def close(self) -> None:
        with self._lock:
            if self._inner is not None:
                self._inner.close()
                self._inner = None


def emitters_for(settings: EventingRoot) -> EmitterFactory:
    """Emitters by the settings: HTTP ingress, Kafka, or Kafka found through the run file.

    Args:
        settings: ``loop.broker_url`` wins; else ``eventing.bootstrap_servers``; else the
            broker of a running ``mlfn dev``.
    """

    def factory(broker: str | None) -> Emitter:
        if broker is None:
            return log_only
        if settings.loop.broker_url:
            return HttpEmitter(settings.loop.broker_url)
        topic = broker_topic(settings.common.namespace, broker)
        partitions = settings.eventing.partitions
        if settings.eventing.bootstrap_servers:
            return KafkaEmitter(settings.eventing.bootstrap_servers, topic, partitions=partitions)
        return _LazyKafkaEmitter(settings.common.home, topic, partitions)

    return factory
