"""broken: its model was never published and has no bootstrap hook, so no instance can load
it; the platform stops each one, and after 3 failed starts held requests get a clear 502."""

from __future__ import annotations

from pydantic import BaseModel

from runtime import LoadedModel, inference


class Req(BaseModel):
    pass


@inference(
    request=Req,
    response=Req,
    model={"name": "never-published"},
    scaling={"initial_scale": 0, "max_scale": 1},
    timeout_seconds=20,
)
def broken(batch: list[Req], model: LoadedModel) -> list[Req]:
    return batch
