"""Broken on purpose: an inference function with three required parameters."""

from pydantic import BaseModel

from runtime import inference


class Req(BaseModel):
    x: int


@inference(request=Req, response=Req)
def three(batch: list[Req], model: object, extra: object) -> list[Req]:
    return batch
