"""An inference function that runs one request at a time, each taking ``ms`` milliseconds."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from runtime import inference


class Req(BaseModel):
    ms: int = Field(default=0, ge=0, le=3000)


class Resp(BaseModel):
    ms: int


@inference(request=Req, response=Resp, scaling={"container_concurrency": 1})
def slow(batch: list[Req]) -> list[Resp]:
    for r in batch:
        time.sleep(r.ms / 1000)  # simulated model work, not synchronisation
    return [Resp(ms=r.ms) for r in batch]
