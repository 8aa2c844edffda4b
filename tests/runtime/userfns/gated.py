"""An inference function that blocks until the test opens GATE (containerConcurrency 1)."""

from __future__ import annotations

import threading

from pydantic import BaseModel

from runtime import inference

GATE = threading.Event()
ENTERED = threading.Semaphore(0)


class Req(BaseModel):
    n: int


class Resp(BaseModel):
    n: int


@inference(request=Req, response=Resp, scaling={"container_concurrency": 1})
def gated(batch: list[Req]) -> list[Resp]:
    ENTERED.release()
    if not GATE.wait(10):
        raise TimeoutError("the test never opened the gate")
    return [Resp(n=r.n) for r in batch]
