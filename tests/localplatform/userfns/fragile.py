"""fragile: one instance at most, so a crash takes every in-flight request with it."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from runtime import inference


class Req(BaseModel):
    sleep: float = 0.0
    crash: bool = False


class Resp(BaseModel):
    pid: int


@inference(
    request=Req,
    response=Resp,
    scaling={"initial_scale": 0, "max_scale": 1, "target": 100},
    timeout_seconds=10,
)
def fragile(batch: list[Req]) -> list[Resp]:
    req = batch[0]
    if req.sleep:
        time.sleep(req.sleep)
    if req.crash:
        os._exit(3)
    return [Resp(pid=os.getpid())]
