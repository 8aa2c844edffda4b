"""A plain functions-framework CloudEvent function: runs unchanged with the CloudEvent."""

from __future__ import annotations

from typing import Any

import functions_framework

SEEN: list[Any] = []


@functions_framework.cloud_event
def on_event(cloud_event: Any) -> None:
    SEEN.append(cloud_event["id"])
