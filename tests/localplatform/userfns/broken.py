"""broken: its server fails at start every time; held requests get a clear 502."""

from __future__ import annotations

from pydantic import BaseModel

from runtime import inference


class Req(BaseModel):
    pass


@inference(
    request=Req,
    response=Req,
    scaling={"initial_scale": 0, "max_scale": 1},
    timeout_seconds=20,
    env={"MLFN_TEST_FAIL_START": "1"},
)
def broken(batch: list[Req]) -> list[Req]:
    return batch
