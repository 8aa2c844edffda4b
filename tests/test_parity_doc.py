"""docs/parity.md is true of the code: every row marked ✔ is checked here, both columns.

The local column is checked against the local eventing plane (:func:`eventing.plane.plan`)
and records; the cluster column against the rendered Knative objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from eventing.codec import KafkaRecord
from eventing.dispatcher import DispatcherConfig
from eventing.filters import compile_trigger
from eventing.naming import SOURCE_EXTENSION, kafka_source_uri, trigger_group
from eventing.plane import plan
from eventing.records import RecordOrigin, record_to_event
from knative.manifests import RenderOptions, render
from knative.manifests.common import Obj
from mlfn.settings import Settings
from runtime import events
from runtime.spec import FunctionSpec, Rollout

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[1] / "docs" / "parity.md"
NS = "ml"


def _specs() -> list[FunctionSpec]:
    return [
        FunctionSpec(
            name="preprocess",
            kind="event",
            module="m",
            entrypoint="f",
            sources=[{"topics": ["digits.raw"]}],
            emits=("mlfn.digits.features",),
        ),
        FunctionSpec(
            name="retrain",
            kind="event",
            module="m",
            entrypoint="f",
            subscriptions=[{"filters": [{"exact": {"type": "mlfn.digits.features"}}]}],
        ),
        FunctionSpec(
            name="predict",
            kind="inference",
            module="m",
            entrypoint="f",
            model={"name": "digits"},
            subscriptions=[
                {
                    "name": "predict-model-updates",
                    "filters": [{"exact": {"type": "mlfn.model.published", "subject": "digits"}}],
                }
            ],
            rollout={"strategy": "canary"},
        ),
    ]


@cache
def local() -> dict[str, DispatcherConfig]:
    base = Settings()
    settings = base.model_copy(update={"common": base.common.model_copy(update={"namespace": NS})})
    return {c.name: c for c in plan(_specs(), settings, lambda fn: f"http://127.0.0.1/{fn}")}


@cache
def cluster() -> tuple[Obj, ...]:
    return tuple(render(_specs(), RenderOptions(namespace=NS)).all())


def obj(kind: str, name: str | None = None, *, function: str | None = None) -> Obj:
    found = [
        o
        for o in cluster()
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (function is None or o["metadata"]["labels"].get("mlfn.dev/function") == function)
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def wrapped(headers: list[tuple[str, bytes]] | None = None) -> dict[str, Any]:
    origin = RecordOrigin(NS, "preprocess", "digits.raw", 2, 41, 1_700_000_000_000)
    rec = KafkaRecord(value=b'{"a": 1}', key=b"k", headers=headers or [])
    return events.attributes(record_to_event(rec, origin, max_bytes=1 << 20))


def rows() -> dict[int, tuple[str, str, str, bool]]:
    """``{#: (behaviour, local cell, cluster cell, checked)}`` from the doc's tables."""
    out = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].isdigit():
            out[int(cells[0])] = (cells[1], cells[2], cells[3], cells[4].startswith("✔"))
    return out


def code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def first(cell: str) -> str:
    spans = code(cell)
    assert spans, f"no `value` in {cell!r}"
    return spans[0]


def _same_value(local_value: str, cluster_value: str) -> Callable[[str, str], None]:
    def check(loc: str, clu: str) -> None:
        assert first(loc) == local_value, loc
        assert first(clu) == cluster_value, clu

    return check


def check_1(loc: str, clu: str) -> None:
    _same_value(local()["preprocess"].name, obj("KafkaSource")["metadata"]["name"])(loc, clu)


def check_2(loc: str, clu: str) -> None:
    _same_value(local()["preprocess"].group, obj("KafkaSource")["spec"]["consumerGroup"])(loc, clu)


def check_3(loc: str, clu: str) -> None:
    src = obj("KafkaSource")
    # Knative builds it from the source's namespace, name and the record's topic
    on_cluster = kafka_source_uri(
        src["metadata"]["namespace"], src["metadata"]["name"], src["spec"]["topics"][0]
    )
    _same_value(wrapped()["source"], on_cluster)(loc, clu)


def check_4(loc: str, clu: str) -> None:
    ext = dict(local()["preprocess"].extensions)[SOURCE_EXTENSION]
    on_cluster = obj("KafkaSource")["spec"]["ceOverrides"]["extensions"][SOURCE_EXTENSION]
    _same_value(ext, on_cluster)(loc, clu)


def check_5(loc: str, clu: str) -> None:
    on_cluster = obj("Trigger", function="retrain")["metadata"]["name"]
    _same_value(local()["retrain-default"].name, on_cluster)(loc, clu)


def check_6(loc: str, clu: str) -> None:
    name = obj("Trigger", function="retrain")["metadata"]["name"]
    _same_value(local()["retrain-default"].group, trigger_group(NS, name))(loc, clu)


def check_7(loc: str, clu: str) -> None:
    records = obj("Trigger", "preprocess-records")
    order = records["metadata"]["annotations"]["kafka.eventing.knative.dev/delivery.order"]
    assert obj("KafkaSource")["spec"]["ordering"] == order
    _same_value(local()["preprocess"].ordering, order)(loc, clu)


def check_8(loc: str, clu: str) -> None:
    trig = obj("Trigger", "retrain-default")
    annotations = trig["metadata"].get("annotations") or {}
    on_cluster = annotations.get("kafka.eventing.knative.dev/delivery.order", "unordered")
    _same_value(local()["retrain-default"].ordering, on_cluster)(loc, clu)


def check_9(loc: str, clu: str) -> None:
    # a structured-mode CloudEvent record, with its own type, passes the local source...
    ce = KafkaRecord(
        value=b'{"specversion": "1.0", "type": "my.own", "source": "/x", "id": "1"}',
        headers=[("content-type", b"application/cloudevents+json")],
    )
    origin = RecordOrigin(NS, "preprocess", "digits.raw", 0, 0)
    attrs = events.attributes(record_to_event(ce, origin, max_bytes=1 << 20))
    assert (attrs["type"], attrs["source"], attrs["id"]) == ("my.own", "/x", "1")
    # ... and, stamped by the KafkaSource's ceOverrides, passes the cluster's Trigger
    stamped = {**attrs, **obj("KafkaSource")["spec"]["ceOverrides"]["extensions"]}
    filt = compile_trigger(obj("Trigger", "preprocess-records")["spec"]["filters"], {})
    assert filt is not None and filt(stamped)
    assert "own `type`" in loc and "`mlfnsource`" in clu


def check_10(loc: str, clu: str) -> None:
    from knative.manifests.eventing import KAFKA_EVENT_TYPE

    _same_value(wrapped()["type"], KAFKA_EVENT_TYPE)(loc, clu)


def check_11(loc: str, clu: str) -> None:
    attrs = wrapped()
    assert (attrs["id"], attrs["subject"]) == ("partition:2/offset:41", "partition:2#41")
    assert code(loc)[:2] == ["partition:<p>/offset:<o>", "partition:<p>#<o>"]


def check_12(loc: str, clu: str) -> None:
    got = wrapped([("Content-Type", b"Application/JSON")])["datacontenttype"]
    assert first(loc) == got == first(clu)


def check_13(loc: str, clu: str) -> None:
    attrs = wrapped([("Content-Type", b"application/json")])
    assert not [k for k in attrs if k.startswith("kafkaheadercontent")]
    assert loc.startswith("none") and clu.startswith("none")


def check_14(loc: str, clu: str) -> None:
    attrs = wrapped([("X-Trace_Id", b"abc")])
    assert attrs["kafkaheaderxtraceid"] == "abc"
    assert first(loc) == "kafkaheader<name>"


def check_16(loc: str, clu: str) -> None:
    from eventing.dispatcher import __doc__ as doc

    assert "knativekafkapartition" in (doc or "") and "knativekafkaoffset" in (doc or "")


def check_19(loc: str, clu: str) -> None:
    from localplatform import canary

    assert first(loc) == canary.__name__
    c = obj("Canary", "predict")
    assert (c["apiVersion"], c["spec"]["provider"]) == ("flagger.app/v1beta1", "knative")
    assert code(clu)[:3] == ["Canary", "flagger.app/v1beta1", "knative"]


def check_20(loc: str, clu: str) -> None:
    fields = code(loc)
    assert set(fields) <= set(Rollout.model_fields)
    analysis = obj("Canary", "predict")["spec"]["analysis"]
    for field in code(clu):
        assert field in analysis or field == "iterations", field
    blue_green = render(
        [_specs()[2].model_copy(update={"rollout": Rollout(strategy="canary", iterations=3)})],
        RenderOptions(namespace=NS),
    ).all()
    assert next(o for o in blue_green if o["kind"] == "Canary")["spec"]["analysis"]["iterations"]


def check_21(loc: str, clu: str) -> None:
    from runtime.spec import format_go_duration

    default = format_go_duration(Rollout().interval)
    assert first(loc) == default == first(clu) == obj("Canary")["spec"]["analysis"]["interval"]


def check_22(loc: str, clu: str) -> None:
    from knative.manifests.flagger import QUERIES

    assert code(clu) == list(QUERIES)
    refs = [m["templateRef"]["name"] for m in obj("Canary")["spec"]["analysis"]["metrics"]]
    assert set(refs) <= set(QUERIES)


def check_25(loc: str, clu: str) -> None:
    trig = obj("Trigger", "predict-pin")
    assert trig["spec"]["subscriber"]["ref"] == {
        "apiVersion": "sinks.knative.dev/v1alpha1",
        "kind": "JobSink",
        "name": "predict-pin",
        "namespace": NS,
    }
    assert (
        "--pin-event"
        in obj("JobSink", "predict-pin")["spec"]["job"]["spec"]["template"]["spec"]["containers"][
            0
        ]["args"]
    )
    assert code(clu)[:2] == ["predict-pin", "predict-pin"]


def check_27(loc: str, clu: str) -> None:
    from localplatform.autoscaler import Policy
    from localplatform.effective import effective_spec
    from localplatform.settings import PlatformSettings
    from runtime.spec import Scaling

    spec = FunctionSpec(
        name="hpa",
        kind="http",
        module="m",
        entrypoint="f",
        scaling={"autoscaler_class": "hpa.autoscaling.knative.dev", "metric": "cpu", "target": 80},
    )
    platform = PlatformSettings()
    policy = Policy.from_scaling(effective_spec(spec, platform).scaling, platform)
    assert policy.target == Scaling().target and policy.min_scale == 1
    assert "never below 1" in loc and "never below 1" in clu


def check_28(loc: str, clu: str) -> None:
    from runtime.spec import Scaling

    for bad in ({"metric": "cpu"}, {"autoscaler_class": "hpa.autoscaling.knative.dev"}):
        with pytest.raises(ValueError, match="does not scale on metric"):
            Scaling.model_validate(bad)
    assert "error at decoration" in loc and "error at decoration" in clu


CHECKS: dict[int, Callable[[str, str], None]] = {
    int(name.removeprefix("check_")): fn
    for name, fn in dict(globals()).items()
    if name.startswith("check_")
}


def test_every_checked_row_has_a_check_and_every_check_a_row() -> None:
    table = rows()
    checked = {n for n, (_, _, _, mark) in table.items() if mark}
    assert checked == set(CHECKS), (
        f"rows marked ✔ without a check: {sorted(checked - set(CHECKS))}; "
        f"checks without a ✔ row: {sorted(set(CHECKS) - checked)}"
    )


@pytest.mark.parametrize("number", sorted(CHECKS))
def test_the_row_is_true_of_the_code(number: int) -> None:
    _behaviour, loc, clu, _ = rows()[number]
    CHECKS[number](loc, clu)
