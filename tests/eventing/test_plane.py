"""The eventing plane: sources and triggers of function specs, replies through the broker, stats."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from eventing.broker import broker_topic
from eventing.plane import EventingPlane, plan
from eventing.producer import EventProducer
from mlfn.settings import Settings
from runtime import events
from runtime.spec import FunctionSpec, KafkaSource, Subscription
from tests.eventing.conftest import wait_until
from tests.eventing.sink import Sink

pytestmark = pytest.mark.integration


def fn(name: str, **kw: Any) -> FunctionSpec:
    return FunctionSpec(name=name, kind="event", module="m", entrypoint="f", **kw)


def test_plan_names_groups_and_topics() -> None:
    settings = Settings().updated(common={"namespace": "ns1"})
    specs = [
        fn("prep", sources=(KafkaSource(topics=("raw",)),), reply_to_broker="default"),
        fn(
            "pred",
            subscriptions=(Subscription(filters=({"exact": {"type": "f"}},)),),
            reply_to_broker=None,
        ),
    ]
    src, trig = plan(specs, settings, lambda f: f"http://h/{f}")
    assert (src.name, src.group, src.topics, src.sink) == (
        "prep",
        "mlfn-ns1-prep",
        ("raw",),
        "http://h/prep",
    )
    assert src.reply_topic == "knative-broker-ns1-default"
    assert (trig.name, trig.group, trig.topics) == (
        "pred-default",
        "knative-trigger-ns1-pred-default",
        ("knative-broker-ns1-default",),
    )
    assert trig.kind == "trigger" and trig.reply_topic is None and trig.filter is not None
    assert trig.filter({"type": "f"}) and not trig.filter({"type": "g"})


@pytest.fixture
def plane_factory(bootstrap: str) -> Iterator[Callable[..., EventingPlane]]:
    planes: list[EventingPlane] = []

    def make(*args: Any, **kw: Any) -> EventingPlane:
        p = EventingPlane(*args, bootstrap=bootstrap, **kw)
        planes.append(p)
        return p

    yield make
    for p in planes:
        p.stop()


def test_sources_triggers_filters_and_replies(
    bootstrap: str,
    make_sink: Callable[..., Sink],
    plane_factory: Callable[..., EventingPlane],
) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings().updated(common={"namespace": ns})
    raw = f"raw-{ns}"

    def prep_reply(ev: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        n = json.loads(ev["data"])["n"]
        kind = "mlfn.features" if n % 2 == 0 else "other.features"
        msg = events.to_http_binary(events.new_event(kind, "/prep", {"n": n}, id=f"f{n}"))
        return 200, msg.headers, msg.body

    sinks = {
        "prep": make_sink(prep_reply),
        "even": make_sink(),
        "odd": make_sink(),
        "all": make_sink(),
    }
    specs = [
        fn("prep", sources=(KafkaSource(topics=(raw,)),)),
        fn(
            "even",
            reply_to_broker=None,
            subscriptions=(
                Subscription(
                    filters=({"prefix": {"type": "mlfn."}}, {"exact": {"source": "/prep"}})
                ),
            ),
        ),
        fn(
            "odd",
            reply_to_broker=None,
            subscriptions=(Subscription(filters=({"not": {"prefix": {"type": "mlfn."}}},)),),
        ),
        fn(
            "all",
            reply_to_broker=None,
            subscriptions=(Subscription(attributes={"source": "/prep"}),),
        ),
    ]
    plane = plane_factory(settings, specs, lambda f: sinks[f].url)
    assert broker_topic(ns, "default") in plane.topics()
    plane.start(wait_assigned_s=30)
    with EventProducer(bootstrap) as p:
        p.stream(raw, ({"n": i} for i in range(40)))

    assert sinks["all"].wait_for(lambda e: len(e) >= 40, 30)
    assert sinks["even"].wait_for(lambda e: len(e) >= 20, 10)
    assert sinks["odd"].wait_for(lambda e: len(e) >= 20, 10)
    evens = sorted(json.loads(e["data"])["n"] for e in sinks["even"].events)
    odds = sorted(json.loads(e["data"])["n"] for e in sinks["odd"].events)
    assert evens == list(range(0, 40, 2)) and odds == list(range(1, 40, 2))
    assert {e["attrs"]["type"] for e in sinks["even"].events} == {"mlfn.features"}

    def counted() -> dict[str, dict[str, Any]]:
        s = {x["name"]: x for x in plane.stats()}
        settled = [
            s["prep"]["replies"] == 40,
            s["even-default"]["delivered"] == s["even-default"]["filtered"] == 20,
            s["odd-default"]["delivered"] == s["odd-default"]["filtered"] == 20,
            s["all-default"]["delivered"] == 40,
        ]
        return s if all(settled) else {}

    stats = wait_until(counted, 10, "stats to settle")
    assert stats["prep"]["delivered"] == 40 and stats["prep"]["kind"] == "source"
    assert "p50" in stats["prep"]["latency_ms"]

    registry = CollectorRegistry()
    registry.register(plane.collector())
    text = generate_latest(registry).decode()
    assert 'mlfn_eventing_delivered_total{dispatcher="prep",kind="source"} 40.0' in text
    assert "mlfn_eventing_filtered_total" in text and "mlfn_eventing_lag_approximate" in text
