"""An event function: replies to each event with one that echoes its data."""

from __future__ import annotations

from typing import Any

from runtime import CloudEvent, Context, event, new_event


@event(emits=["test.echoed"])
def echo(ev: CloudEvent, ctx: Context) -> CloudEvent | None:
    data: Any = ev.get_data()
    if isinstance(data, dict) and data.get("drop"):
        return None
    if isinstance(data, dict) and data.get("fail"):
        raise ValueError("the event asked to fail")
    return new_event("test.echoed", f"/{ctx.spec.name}", {"seen": data, "of": ev["id"]})
