"""Eventing's exception tree. Every error says what was found and how to fix it.

EventingError (runtime.errors.MlfnError)
├── BrokerError                 the embedded broker cannot start or stop
├── KafkaUnavailableError       Kafka cannot be reached or refused a request (converted
│                               from kafka-python errors in :mod:`eventing._kafka`)
├── MalformedRecordError (ValueError)   a consumed record cannot become a CloudEvent
└── FilterError (ValueError)    a trigger filter is not valid Knative filter dialect
"""

from __future__ import annotations

from runtime.errors import MlfnError

__all__ = [
    "BrokerError",
    "EventingError",
    "FilterError",
    "KafkaUnavailableError",
    "MalformedRecordError",
]


class EventingError(MlfnError):
    """Root of every error the eventing package raises on purpose."""


class BrokerError(EventingError):
    """The embedded broker cannot start, or did not become ready in time."""


class KafkaUnavailableError(EventingError):
    """Kafka cannot be reached, or refused a request; the cause is chained."""


class MalformedRecordError(EventingError, ValueError):
    """A record cannot be turned into a CloudEvent; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FilterError(EventingError, ValueError):
    """A trigger filter does not follow Knative's filter dialect."""
