"""An event function that works ``ms`` milliseconds (containerConcurrency 2) and says its pid.

With ``mark`` in the data it first creates that file, so a test can wait until the
call is running (a condition, not a sleep).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from runtime import CloudEvent, event, new_event


@event(emits=["test.slow.done"], scaling={"container_concurrency": 2})
def slow(ev: CloudEvent) -> CloudEvent:
    data: Any = ev.get_data() or {}
    if data.get("mark"):
        Path(data["mark"]).touch()
    if data.get("ms"):
        time.sleep(data["ms"] / 1000)  # simulated work, not synchronisation
    return new_event("test.slow.done", "/slow", {"pid": os.getpid(), "of": ev["id"]})
