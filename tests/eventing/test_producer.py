"""EventProducer: what it sends, and the acknowledgement of each value."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from eventing.producer import EventProducer
from tests.eventing.conftest import read_until

pytestmark = pytest.mark.integration


def test_stream_calls_on_acked_once_per_value_the_broker_has(
    bootstrap: str, unique_topic: Callable[[str], str]
) -> None:
    topic = unique_topic("acked")
    acked: list[Any] = []
    threads: set[str] = set()

    def on_acked(value: Any) -> None:
        acked.append(value)
        threads.add(threading.current_thread().name)

    with EventProducer(bootstrap, partitions=2) as p:
        sent = p.stream(topic, ({"n": i} for i in range(50)), rate=1000, on_acked=on_acked)
    assert sent == 50
    assert sorted(v["n"] for v in acked) == list(range(50))  # each once, flushed by stream
    assert threading.current_thread().name not in threads  # the producer's I/O thread
    stored = [json.loads(c.record.value or b"") for c in read_until(bootstrap, topic, 50)]
    assert sorted(v["n"] for v in stored) == list(range(50))
