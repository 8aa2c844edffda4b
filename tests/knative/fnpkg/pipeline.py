"""preprocess (KafkaSource + dead-letter topic), predict (canary), retrain (JobSink, rollout)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from runtime.function import event, inference


class Req(BaseModel):
    x: list[float]


class Resp(BaseModel):
    y: int


@event(
    sources=[
        {"topics": ["digits.raw"], "delivery": {"retry": 2, "dead_letter_sink": "digits.dlq"}}
    ],
    emits=["mlfn.digits.features"],
)
def preprocess(ev: Any) -> Any:
    return ev


@inference(
    request=Req,
    response=Resp,
    model="digits",
    batching={"max_batch_size": 64},
    scaling={"container_concurrency": 8, "min_scale": 1, "max_scale": 5, "target": 4},
    resources={"cpu": "500m", "memory": "512Mi"},
    rollout={"strategy": "canary"},
)
def predict(batch: list[Req], model: Any) -> list[Resp]:
    return [Resp(y=0) for _ in batch]


@event(
    subscriptions=[
        {
            "name": "retrain-features",
            "filters": [{"exact": {"type": "mlfn.digits.features"}}],
            "delivery": {"dead_letter_sink": "http://dlq.example.svc/retrain"},
        },
        {"broker": "default", "attributes": {"type": "mlfn.digits.labels"}},
    ],
    emits=["mlfn.model.published"],
    job=True,
    retrain={"model": "digits", "every_rows": 500},
    resources={"cpu": "1", "memory": "1Gi"},
    timeout_seconds=600,
)
def retrain(ev: Any, ctx: Any) -> Any:
    return None
