"""The baseline of the CloudEvent benchmark: a no-op CloudEvent function for functions-framework.

Served by functions-framework's own gunicorn server (``WORKERS=2 functions-framework
--target noop --signature-type cloudevent``).
"""

from __future__ import annotations

from typing import Any

import functions_framework


@functions_framework.cloud_event
def noop(event: Any) -> None:
    return None
