"""square: squares each value; served over HTTP and gRPC (``grpc=True``)."""

from __future__ import annotations

from pydantic import BaseModel

from runtime import inference


class Req(BaseModel):
    x: list[float]


class Resp(BaseModel):
    y: list[float]


@inference(
    request=Req,
    response=Resp,
    grpc=True,
    batching={"max_batch_size": 8},
    scaling={"initial_scale": 0},  # starts at zero: the first gRPC call wakes it
)
def square(batch: list[Req]) -> list[Resp]:
    return [Resp(y=[v * v for v in r.x]) for r in batch]
