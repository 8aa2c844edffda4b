from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

import runtime
from runtime import Delivery, SpecError, event, inference
from runtime.spec import Scaling, format_go_duration, format_iso_duration

pytestmark = pytest.mark.unit


class Req(BaseModel):
    x: list[float]


class Resp(BaseModel):
    y: int


def test_public_api_is_pinned() -> None:
    assert sorted(runtime.__all__) == sorted(
        [
            "Batching",
            "BatchError",
            "CloudEvent",
            "Context",
            "Delivery",
            "DiscoveryError",
            "EventBatch",
            "Function",
            "FunctionSpec",
            "InvalidEvent",
            "KafkaSource",
            "MlfnError",
            "ModelNotFoundError",
            "ModelRef",
            "ModelStoreError",
            "Resources",
            "RetrainPolicy",
            "Rollout",
            "Scaling",
            "SpecError",
            "Subscription",
            "Toleration",
            "event",
            "inference",
            "new_event",
            # models and datasets
            "DataRange",
            "DatasetStore",
            "LoadedModel",
            "ModelHandle",
            "ModelStore",
            "Row",
            "Rows",
            "open_model",
            "register_bootstrap",
            "stack",
        ]
    )


def test_decorators_record_spec_and_return_the_function_unchanged() -> None:
    @inference(request=Req, response=Resp, model="digits", batching={"max_batch_size": 8})
    def my_predict(batch: list[Req], model: object) -> list[Resp]:
        return [Resp(y=1) for _ in batch]

    fn = my_predict.__mlfn__  # type: ignore[attr-defined]
    assert fn.spec.name == "my-predict"
    assert fn.spec.batching.max_batch_size == 8
    assert fn.spec.model.name == "digits"
    assert my_predict([Req(x=[1.0])], None) == [Resp(y=1)]
    # it subscribes to its model's publications, so new versions arrive on an event
    (sub,) = fn.spec.subscriptions
    assert sub.filters == ({"exact": {"type": "mlfn.model.published", "subject": "digits"}},)


def test_event_sources_take_iso_durations() -> None:
    @event(sources=[{"topics": ["raw"], "delivery": {"backoff_delay": "PT0.5S", "retry": 2}}])
    def handle(ev: object) -> None:
        return None

    spec = handle.__mlfn__.spec  # type: ignore[attr-defined]
    assert spec.sources[0].delivery.backoff_delay == timedelta(seconds=0.5)
    assert format_iso_duration(spec.sources[0].delivery.backoff_delay) == "PT0.5S"


def test_bad_specs_say_what_to_fix() -> None:
    with pytest.raises(SpecError, match="DNS label"):
        event(name="Bad_Name")(lambda ev: None)
    with pytest.raises(SpecError, match="takes \\(event\\) or \\(event, ctx\\)"):
        event()(lambda: None)
    with pytest.raises(ValueError, match="min_scale"):
        Scaling(min_scale=3, max_scale=2)


def test_backoff_matches_knative() -> None:
    d = Delivery(backoff_delay="PT1S", backoff_policy="exponential")
    assert [d.backoff(i).total_seconds() for i in (1, 2, 3)] == [1, 2, 4]
    lin = Delivery(backoff_delay="PT1S", backoff_policy="linear")
    assert [lin.backoff(i).total_seconds() for i in (1, 2, 3)] == [1, 2, 3]
    assert format_go_duration(timedelta(seconds=60)) == "60s"
