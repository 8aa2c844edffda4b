"""``store``: each record ``{"n": i}`` on the test topic becomes one dataset row, keyed on its id.

While the file ``<MLFN_HOME>/gate`` exists every delivery fails with a 500 (the dispatcher
retries), so a test can hold records unconsumed.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from runtime import CloudEvent, Context, DatasetStore, Row, event

TOPIC = os.environ.get("MLFN_TEST_TOPIC", "rel.raw")
DLQ = f"{TOPIC}.dlq"
DATASET = "rows"

_stores: dict[str, DatasetStore] = {}
_lock = threading.Lock()


def _store(ctx: Context) -> DatasetStore:
    root = str(ctx.settings.dataset_store_path)
    with _lock:
        if root not in _stores:
            _stores[root] = DatasetStore(root)
        return _stores[root]


@event(
    sources=[
        {
            "topics": [TOPIC],
            "delivery": {
                "retry": 1000,
                "backoff_policy": "linear",
                "backoff_delay": "PT0.05S",
                "dead_letter_sink": DLQ,
            },
        }
    ],
)
def store(ev: CloudEvent, ctx: Context) -> None:
    if (ctx.settings.common.home / "gate").exists():
        raise RuntimeError("the gate is closed")
    data: Any = ev.get_data()
    if isinstance(data, bytes | str):
        data = json.loads(data)
    n = int(data["n"])
    _store(ctx).open(DATASET).append([Row(ev["id"], [float(n)], n)])
