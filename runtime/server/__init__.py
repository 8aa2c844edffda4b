"""The HTTP server that runs one function (``mlfn serve``).

``create_app`` builds the WSGI app in-process (tests, ``mlfn invoke``, an instance forked
from a pre-warmed process); ``run`` serves it under gunicorn. Imports here stay lean:
gunicorn and the model backends load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.server.app import App, Request, Response, create_app

if TYPE_CHECKING:
    from runtime.function import Function
    from runtime.settings import RuntimeSettings

__all__ = ["App", "Request", "Response", "create_app", "run"]


def run(
    function: Function,
    settings: RuntimeSettings,
    port: int = 8080,
    host: str = "127.0.0.1",
    **kw: Any,
) -> None:
    """Serve ``function`` under gunicorn; see :func:`runtime.server.serve.run`."""
    from runtime.server.serve import run as _run

    _run(function, settings, port, host, **kw)
