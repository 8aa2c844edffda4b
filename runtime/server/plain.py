"""Plain functions-framework HTTP functions: called unchanged with ``flask.request``."""

from __future__ import annotations

from typing import Any

import flask
import werkzeug.routing

from runtime.function import Function

__all__ = ["flask_app"]


def flask_app(function: Function, max_body_bytes: int) -> flask.Flask:
    """A Flask app that routes every path and method to ``function.target(flask.request)``.

    Exceptions propagate to the server's WSGI layer, which renders the JSON error and
    logs the traceback; ``abort()`` and other HTTP exceptions stay Flask's own responses.
    """
    app = flask.Flask(f"mlfn.{function.name}")
    app.config["PROPAGATE_EXCEPTIONS"] = True
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.url_map.add(werkzeug.routing.Rule("/", defaults={"path": ""}, endpoint="run"))
    app.url_map.add(werkzeug.routing.Rule("/<path:path>", endpoint="run"))

    def run(path: str) -> Any:
        return function.target(flask.request._get_current_object())  # type: ignore[attr-defined]

    app.view_functions["run"] = run
    return app
