"""stuck: never becomes ready (bootstrapping its model takes a minute); requests get 504 after 1 s."""

from __future__ import annotations

import time

from pydantic import BaseModel

from runtime import LoadedModel, ModelStore, inference, register_bootstrap


class Req(BaseModel):
    pass


@inference(
    request=Req,
    response=Req,
    model={"name": "slow-to-train"},
    scaling={"initial_scale": 0, "max_scale": 1},
    timeout_seconds=1,
)
def stuck(batch: list[Req], model: LoadedModel) -> list[Req]:
    return batch


@register_bootstrap("slow-to-train")
def _train_for_a_minute(store: ModelStore) -> None:
    time.sleep(60)  # a first training run that outlasts every test using it; publishes nothing
