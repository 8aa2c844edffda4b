"""A plain functions-framework HTTP function: runs unchanged with flask.request."""

from __future__ import annotations

import flask
import functions_framework


@functions_framework.http
def hello(request: flask.Request) -> tuple[str, int]:
    if request.args.get("fail"):
        raise RuntimeError("hello was asked to fail")
    return f"hello {request.args.get('name', 'world')}", 200
