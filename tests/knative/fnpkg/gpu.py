"""A GPU inference function with spec defaults (initial-scale and retention come from mlfn)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from runtime.function import inference


class Req(BaseModel):
    x: list[float]


class Resp(BaseModel):
    y: int


@inference(
    name="predict-torch",
    request=Req,
    response=Resp,
    model={"name": "digits-torch", "backend": "torch"},
    resources={"cpu": "1", "memory": "2Gi", "gpus": 1},
)
def predict_torch(batch: list[Req], model: Any) -> list[Resp]:
    return [Resp(y=0) for _ in batch]
