"""batched: answers every request with the size of the batch it was part of."""

from __future__ import annotations

from pydantic import BaseModel

from runtime import inference


class Req(BaseModel):
    n: int = 0


class Resp(BaseModel):
    batch: int


@inference(
    request=Req,
    response=Resp,
    batching={"max_batch_size": 64, "max_wait_ms": 300},
    scaling={"max_scale": 1},
)
def batched(batch: list[Req]) -> list[Resp]:
    return [Resp(batch=len(batch)) for _ in batch]
