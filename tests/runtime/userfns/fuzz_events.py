"""An event function for fuzzing: replies with a summary of whatever data it got.

Unlike ``events_fn.echo`` it never puts the event's data (which may be bytes) into its
reply, so every 5xx the fuzzer sees is the server's, not this function's.
"""

from __future__ import annotations

from runtime import CloudEvent, Context, event, new_event


@event(emits=["test.summary"])
def summary(ev: CloudEvent, ctx: Context) -> CloudEvent:
    data = ev.get_data()
    return new_event(
        "test.summary", f"/{ctx.spec.name}", {"kind": type(data).__name__, "of": str(ev["id"])}
    )
