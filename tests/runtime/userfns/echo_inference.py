"""An inference function with batching and no model: sums each request's values."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, Field

from runtime import inference


class Req(BaseModel):
    x: list[float] = Field(min_length=1)
    fail: bool = False
    work_ms: float = Field(default=0, ge=0, le=5000)


class Resp(BaseModel):
    total: float
    batch: int


@inference(request=Req, response=Resp, batching={"max_batch_size": 8, "max_wait_ms": 1})
def summer(batch: list[Req]) -> list[Resp]:
    """Adds up x; fail=true raises; work_ms simulates a slow model."""
    if any(r.fail for r in batch):
        raise RuntimeError("boom: the request asked to fail")
    work = max(r.work_ms for r in batch)
    if work:
        time.sleep(work / 1000)  # simulated model work, not synchronisation
    return [Resp(total=sum(r.x), batch=len(batch)) for r in batch]


@inference(request=Req, response=Resp, scaling={"container_concurrency": 1})
def pid(batch: list[Req]) -> list[Resp]:
    """Answers its process id in total (so tests can tell instances apart)."""
    return [Resp(total=os.getpid(), batch=len(batch)) for _ in batch]
