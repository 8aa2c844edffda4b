"""Helpers for the eventing integration tests: in-thread sinks, dispatchers that always stop."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from eventing._kafka import Consumed, ensure_topics, read_topic
from eventing.dispatcher import Dispatcher, DispatcherConfig
from tests.eventing.sink import Respond, Sink, ok
from tests.fixtures.waiting import wait_for as wait_until


@pytest.fixture
def make_sink() -> Iterator[Callable[..., Sink]]:
    sinks: list[Sink] = []

    def make(respond: Respond = ok) -> Sink:
        s = Sink(respond).start()
        sinks.append(s)
        return s

    yield make
    for s in sinks:
        s.stop()


@pytest.fixture
def run_dispatcher(bootstrap: str) -> Iterator[Callable[[DispatcherConfig], Dispatcher]]:
    started: list[Dispatcher] = []

    def run(cfg: DispatcherConfig) -> Dispatcher:
        ensure_topics(bootstrap, cfg.topics, 4)
        d = Dispatcher(cfg, bootstrap).start()
        started.append(d)
        assert d.wait_assigned(30), f"dispatcher {cfg.name} got no partitions in 30s"
        return d

    yield run
    for d in started:
        d.stop()


def read_until(bootstrap: str, topic: str, n: int, timeout_s: float = 20) -> list[Consumed]:
    """Records of ``topic`` once it holds at least ``n``."""
    return list(
        wait_until(
            lambda: (recs := read_topic(bootstrap, topic, quiet_s=0.1)) and len(recs) >= n and recs,
            timeout_s,
            f"{n} records in {topic}",
        )
    )
