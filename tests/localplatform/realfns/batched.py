"""batched: answers every request with the size of the batch it was part of.

Each call takes 50 ms, so requests that arrive meanwhile queue for the next batch (a lone
request never waits for ``max_wait_ms``: batching needs a busy model).
"""

from __future__ import annotations

import time

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
    time.sleep(0.05)
    return [Resp(batch=len(batch)) for _ in batch]
