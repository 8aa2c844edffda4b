"""``mlfn invoke``: one call of a function, in-process or against a running server.

In-process calls go through :meth:`runtime.server.App.handle`, the same routing and
dispatch core the HTTP server uses; remote calls send the same request over HTTP.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import urllib3

from runtime import events
from runtime.errors import MlfnError
from runtime.function import Function
from runtime.server.app import Request, create_app
from runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from runtime.retraining.emit import EmitterFactory

__all__ = ["InvokeError", "invoke_local", "invoke_remote", "render", "request_for"]


class InvokeError(MlfnError):
    """The function could not be called (model failed to load, server unreachable)."""


def request_for(
    is_event: bool, payload: Any, path: str = "/", event_type: str = "mlfn.invoke"
) -> Request:
    """The HTTP request carrying ``payload``: a binary-mode CloudEvent for event functions,
    a JSON body otherwise."""
    if is_event:
        msg = events.to_http_binary(events.new_event(event_type, "/mlfn/cli/invoke", payload))
        headers = {k.lower(): v for k, v in msg.headers.items()}
        return Request("POST", path, headers, msg.body)
    return Request("POST", path, {"content-type": "application/json"}, json.dumps(payload).encode())


def render(status: int, headers: dict[str, str], body: bytes) -> str:
    """What ``mlfn invoke`` prints: the JSON response, a reply event as JSON, or a status."""
    h = {k.lower(): v for k, v in headers.items()}
    if not body:
        return json.dumps({"status": status, "reply": None})
    if "ce-specversion" in h:
        return json.dumps(events.event_to_dict(events.from_http_message(h, body)), indent=2)
    try:
        return json.dumps(json.loads(body), indent=2)
    except ValueError:
        return body.decode("utf-8", "replace")


def invoke_local(
    function: Function,
    settings: RuntimeSettings,
    req: Request,
    *,
    emitters: EmitterFactory | None = None,
) -> tuple[int, str]:
    """Load the function (and its model) here, answer ``req``, return status and output.

    Raises:
        InvokeError: the model did not load within ``MLFN_READY_TIMEOUT_SECONDS``.
    """
    app = create_app(function, settings, emitters=emitters)
    try:
        if not app.wait_ready(settings.server.ready_timeout_seconds):
            raise InvokeError(
                app.load_error
                or f"{function.name} was not ready after {settings.server.ready_timeout_seconds:g}s; "
                "raise MLFN_READY_TIMEOUT_SECONDS"
            )
        resp = app.handle(req)
    finally:
        app.close()
    return resp.status, render(resp.status, resp.headers, resp.body)


def invoke_remote(url: str, req: Request, timeout: float = 60.0) -> tuple[int, str]:
    """Send ``req`` to the server at ``url``; its status and the rendered output.

    Raises:
        InvokeError: the server cannot be reached.
    """
    target = url.rstrip("/") + req.path
    try:
        r = urllib3.request(
            req.method,
            target,
            body=req.body,
            headers=dict(req.headers),
            timeout=timeout,
            retries=False,
        )
    except urllib3.exceptions.HTTPError as err:
        raise InvokeError(f"cannot reach {target}: {err}; is `mlfn serve` running there?") from err
    return r.status, render(r.status, dict(r.headers.items()), r.data)
