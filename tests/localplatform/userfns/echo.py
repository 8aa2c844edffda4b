"""echo: answers with its pid; optional sleep; ``crash`` exits the instance mid-request."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from runtime import inference

VERSION = 1


class Req(BaseModel):
    sleep: float = 0.0
    crash: bool = False


class Resp(BaseModel):
    pid: int
    version: int


@inference(
    request=Req,
    response=Resp,
    scaling={"initial_scale": 0, "target": 1, "target_utilization_percentage": 100},
    timeout_seconds=5,
)
def echo(batch: list[Req]) -> list[Resp]:
    req = batch[0]
    if req.crash:
        os._exit(3)
    if req.sleep:
        time.sleep(req.sleep)
    return [Resp(pid=os.getpid(), version=VERSION)]
