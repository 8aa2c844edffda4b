"""mlfn's eventing: moves CloudEvents between Kafka and HTTP with Knative's semantics.

The embedded broker (:class:`EmbeddedBroker`), producers (:class:`EventProducer`),
KafkaSource-style dispatchers (:class:`Dispatcher`), the Kafka broker and its triggers
with Knative's filters, and the :class:`EventingPlane` that runs them for a set of
functions. All CloudEvents conversion is in :mod:`eventing.codec`; kafka-python is used
only in :mod:`eventing._kafka`.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real imports, for type checkers and readers
    from eventing.broker import EmbeddedBroker, broker_topic
    from eventing.dispatcher import Dispatcher, DispatcherConfig
    from eventing.errors import (
        BrokerError,
        EventingError,
        FilterError,
        KafkaUnavailableError,
        MalformedRecordError,
    )
    from eventing.filters import compile_trigger
    from eventing.plane import EventingPlane, plan
    from eventing.producer import EventProducer, default_topic, digits_records
    from eventing.stats import DispatchStats, EventingCollector

# Imported on first use: the runtime server imports eventing.codec on every cold start,
# and must not pay for kafka-python and the dispatcher (about 0.5 s) to do so.
_LAZY = {
    "BrokerError": "eventing.errors",
    "DispatchStats": "eventing.stats",
    "Dispatcher": "eventing.dispatcher",
    "DispatcherConfig": "eventing.dispatcher",
    "EmbeddedBroker": "eventing.broker",
    "EventProducer": "eventing.producer",
    "EventingCollector": "eventing.stats",
    "EventingError": "eventing.errors",
    "EventingPlane": "eventing.plane",
    "FilterError": "eventing.errors",
    "KafkaUnavailableError": "eventing.errors",
    "MalformedRecordError": "eventing.errors",
    "broker_topic": "eventing.broker",
    "compile_trigger": "eventing.filters",
    "default_topic": "eventing.producer",
    "digits_records": "eventing.producer",
    "plan": "eventing.plane",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BrokerError",
    "DispatchStats",
    "Dispatcher",
    "DispatcherConfig",
    "EmbeddedBroker",
    "EventProducer",
    "EventingCollector",
    "EventingError",
    "EventingPlane",
    "FilterError",
    "KafkaUnavailableError",
    "MalformedRecordError",
    "broker_topic",
    "compile_trigger",
    "default_topic",
    "digits_records",
    "plan",
]
