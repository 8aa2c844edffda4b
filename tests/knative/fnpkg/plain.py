"""A plain functions-framework HTTP function: gets a default spec."""

from __future__ import annotations

from typing import Any

import functions_framework


@functions_framework.http
def echo(request: Any) -> str:
    return "ok"
