"""stuck: never becomes ready (its model "loads" for a minute); requests get 504 after 1 s."""

from __future__ import annotations

from pydantic import BaseModel

from runtime import inference


class Req(BaseModel):
    pass


@inference(
    request=Req,
    response=Req,
    scaling={"initial_scale": 0, "max_scale": 1},
    timeout_seconds=1,
    env={"MLFN_TEST_LOAD_SECONDS": "60"},
)
def stuck(batch: list[Req]) -> list[Req]:
    return batch
