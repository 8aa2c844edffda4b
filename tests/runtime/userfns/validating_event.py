"""An event function that validates its data with pydantic and rejects some as invalid."""

from __future__ import annotations

from pydantic import BaseModel

from runtime import CloudEvent, InvalidEvent, event


class Reading(BaseModel):
    value: float


@event()
def check(ev: CloudEvent) -> None:
    reading = Reading.model_validate(ev.get_data())
    if reading.value < 0:
        raise InvalidEvent("value must not be negative")
