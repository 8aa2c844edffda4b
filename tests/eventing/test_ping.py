"""The local ping source posts Knative PingSource events on schedule, and survives failures."""

from __future__ import annotations

import json
import logging

import pytest

from eventing.ping import PingSources, ping_targets
from runtime.registry import discover
from tests.eventing.sink import Sink

pytestmark = pytest.mark.integration


def test_retrain_policies_with_every_seconds_get_a_ping() -> None:
    targets = ping_targets(
        [fn.spec for fn in discover("functions")], lambda n: f"http://gw/{n}", "ml"
    )
    assert [(t.name, t.url, t.every_seconds) for t in targets] == [
        ("retrain-ping", "http://gw/retrain", 30)
    ]
    assert targets[0].data == {"model": "digits", "reason": "every_seconds"}


def test_pings_arrive_on_schedule_and_a_failure_does_not_stop_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mlfn.eventing.ping")  # its log lines must work too
    answers = iter([503])
    sink = Sink(lambda ev: (next(answers, 202), {}, b"")).start()
    try:
        (target,) = ping_targets(
            [fn.spec for fn in discover("functions")], lambda n: sink.url, "ml"
        )
        fast = type(target)(target.name, target.url, 0.05, target.data, target.namespace)
        pings = PingSources([fast]).start()
        try:
            assert sink.wait_for(lambda evs: len(evs) >= 3, 10)
        finally:
            pings.stop()
        first, second = sink.events[0], sink.events[1]
        assert first["status"] == 503 and second["status"] == 202
        assert first["attrs"]["type"] == "dev.knative.sources.ping"
        assert first["attrs"]["source"] == "/apis/v1/namespaces/ml/pingsources/retrain-ping"
        assert json.loads(first["data"]) == {"model": "digits", "reason": "every_seconds"}
        assert first["attrs"]["id"] != second["attrs"]["id"]
        said = [r.getMessage() for r in caplog.records]
        assert "ping source started" in said and "ping source stopped: stop() was called" in said
    finally:
        sink.stop()
