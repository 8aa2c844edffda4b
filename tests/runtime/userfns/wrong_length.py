"""An inference function that returns one result too few: every request gets a clear 500."""

from __future__ import annotations

from pydantic import BaseModel

from runtime import inference


class Req(BaseModel):
    x: int


class Resp(BaseModel):
    y: int


@inference(request=Req, response=Resp, batching={"max_batch_size": 4, "max_wait_ms": 1})
def short(batch: list[Req]) -> list[Resp]:
    return [Resp(y=r.x) for r in batch][:-1]
