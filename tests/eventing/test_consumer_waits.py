"""What the consumer thread no longer waits on: commits (async), lag (from fetches), and
long fetches while records flow (the fetch wait switches between busy and idle)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from eventing._kafka import Consumer, Producer, committed_offsets, ensure_topics
from eventing.codec import KafkaRecord
from eventing.dispatcher import Dispatcher, DispatcherConfig
from tests.eventing.conftest import wait_until
from tests.eventing.sink import Sink

JOIN_S = 60
"""How long a first delivery may wait on the group join: about 3 s on the embedded broker,
but a loaded 2-core machine has been seen taking 9 s (extra JoinGroup rounds) and more."""

pytestmark = pytest.mark.integration

JSON = [("content-type", b"application/json")]


def test_offsets_are_committed_and_lag_drains_while_the_dispatcher_runs(
    bootstrap: str,
    unique_topic: Callable[[str], str],
    make_sink: Callable[..., Sink],
    run_dispatcher: Callable[[DispatcherConfig], Dispatcher],
) -> None:
    topic = unique_topic("commits")
    ensure_topics(bootstrap, [topic], 4)
    p = Producer(bootstrap)
    for i in range(40):
        p.send(
            topic, KafkaRecord(json.dumps({"n": i}).encode(), headers=list(JSON)), partition=i % 4
        )
    p.flush()
    p.close()
    sink = make_sink()
    group = f"g-{topic}"
    d = run_dispatcher(
        DispatcherConfig("commits", (topic,), group, sink.url, durable_retries=False)
    )
    assert sink.wait_for(lambda evs: len(evs) >= 40, JOIN_S), f"{len(sink.events)} of 40 delivered"
    tps = [(topic, i) for i in range(4)]
    wait_until(
        lambda: committed_offsets(bootstrap, group, tps) == dict.fromkeys(tps, 10),
        20,
        "every delivered offset committed while the dispatcher runs",
    )
    wait_until(
        lambda: (lag := d.stats.snapshot().lag) and len(lag) == 4 and not any(lag.values()),
        20,
        "lag of every partition back to 0",
    )
    assert d.running and d.error is None


def test_the_fetch_wait_is_short_while_records_flow_and_long_when_idle(
    bootstrap: str, unique_topic: Callable[[str], str]
) -> None:
    """The switch writes kafka-python's fetcher config: this fails if a kafka-python
    release stops reading it there (deliveries would then wait the idle wait)."""
    topic = unique_topic("waits")
    ensure_topics(bootstrap, [topic], 1)

    def consumer(group: str) -> Consumer:
        return Consumer(bootstrap, group, [topic], fetch_wait_ms=7, idle_fetch_wait_ms=300)

    c = consumer(f"g-{topic}")
    try:
        assert c._fetch_config is not None, "kafka-python's fetcher config is not where it was"
        assert c._fetch_config["fetch_max_wait_ms"] == 300  # idle until records come
        assert c.idle
        p = Producer(bootstrap)
        p.send_sync(topic, KafkaRecord(b"{}", headers=list(JSON)))
        p.close()
        try:
            wait_until(lambda: c.poll(0.1), JOIN_S / 2, "the record (after the group join)")
        except AssertionError:
            # under load the embedded broker has answered a new group's SyncGroup with a
            # rebalance again and again (20 joins in 60 s, never an assignment); what this
            # test checks comes after the join: a second group, from the first offset
            c.close()
            c = consumer(f"g2-{topic}")
            wait_until(lambda: c.poll(0.1), JOIN_S, "the record (after a second group's join)")
        assert c._fetch_config["fetch_max_wait_ms"] == 7
        assert not c.idle
        c.IDLE_AFTER_S = 0.2  # type: ignore[misc]
        wait_until(
            lambda: not c.poll(0.1) and c._fetch_config["fetch_max_wait_ms"] == 300,  # type: ignore[index]
            20,
            "the idle wait back after a quiet spell",
        )
        assert c.idle
    finally:
        c.close()
