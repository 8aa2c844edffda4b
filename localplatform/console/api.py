"""What the console reads: static files, the pipeline graph, and the model history."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from typing import Any

from localplatform.routing import UI_PATH
from runtime.errors import MlfnError
from runtime.models.store import ModelStore
from runtime.spec import FunctionSpec

__all__ = ["UI_PATH", "model_history", "model_names", "pipeline", "static_response"]

log = logging.getLogger(__name__)


_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _response(status: int, content_type: str, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-cache\r\n"
        "X-Content-Type-Options: nosniff\r\n\r\n"
    )
    return head.encode() + body


@lru_cache(maxsize=16)
def _static(name: str) -> bytes | None:
    if "/" in name or name.startswith(".") or not name.endswith(tuple(_TYPES)):
        return None
    try:
        return resources.files("localplatform.console").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def static_response(path: str) -> bytes:
    """The HTTP response for ``ui``, ``ui/`` or ``ui/<file>`` (a path under ``/_mlfn/``)."""
    name = path[len("ui/") :] if path.startswith("ui/") else ""
    name = name or "index.html"
    body = _static(name)
    if body is None:
        message = f"no console file {name!r}; the console is at {UI_PATH}".encode()
        return _response(404, "text/plain; charset=utf-8", message)
    return _response(200, _TYPES["." + name.rsplit(".", 1)[-1]], body)


def pipeline(specs: Iterable[FunctionSpec], namespace: str) -> dict[str, Any]:
    """The pipeline graph of the running functions, as the console draws it."""
    from eventing.graph import pipeline_graph  # kafka-python only when the page asks

    return pipeline_graph(specs, namespace).as_dict()


def model_names(specs: Iterable[FunctionSpec]) -> list[str]:
    """Every model a function serves or retrains, in the order the specs name them."""
    names: dict[str, None] = {}
    for spec in specs:
        if spec.model is not None:
            names[spec.model.name] = None
        if spec.retrain is not None:
            names[spec.retrain.model] = None
    return list(names)


def _decision(extra: dict[str, Any]) -> str:
    gate = extra.get("gate")
    if isinstance(gate, dict) and gate.get("decision"):
        return str(gate["decision"])
    return "bootstrap" if extra.get("bootstrap") else "published"


def model_history(store: ModelStore, names: Iterable[str]) -> list[dict[str, Any]]:
    """Per model: the ``latest`` version and every version, oldest first.

    Each version has its time, holdout metrics, the gate's decision (``published``,
    ``rejected``, or ``bootstrap`` for a first version) and its reason. A model the store
    cannot read is reported with an ``error`` instead of failing the whole answer.
    """
    out: list[dict[str, Any]] = []
    for name in names:
        entry: dict[str, Any] = {"name": name, "latest": None, "versions": []}
        try:
            versions = store.versions(name)
            if versions:
                entry["latest"] = store.latest(name)
        except (MlfnError, OSError) as err:
            log.warning("console: cannot read model %s: %s", name, err)
            entry["error"] = str(err)
            out.append(entry)
            continue
        for v in versions:
            found = v.extra.get("gate")
            gate: dict[str, Any] = found if isinstance(found, dict) else {}
            entry["versions"].append(
                {
                    "version": v.version,
                    "created": v.created.isoformat(),
                    "metrics": v.metrics,
                    "decision": _decision(v.extra),
                    "reason": str(gate.get("reason", "")),
                    "trigger": v.extra.get("trigger"),
                    "rows": v.data.rows if v.data is not None else v.metrics.get("train_rows"),
                }
            )
        out.append(entry)
    return out
