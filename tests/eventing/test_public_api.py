from __future__ import annotations

import pytest

import eventing

pytestmark = pytest.mark.unit


def test_public_api_is_pinned() -> None:
    assert sorted(eventing.__all__) == [
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
    for name in eventing.__all__:
        assert getattr(eventing, name) is not None


def test_errors_are_mlfn_errors() -> None:
    from runtime.errors import MlfnError

    assert issubclass(eventing.EventingError, MlfnError)
    assert issubclass(eventing.FilterError, ValueError)
    assert issubclass(eventing.MalformedRecordError, ValueError)
