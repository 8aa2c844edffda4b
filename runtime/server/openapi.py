"""The OpenAPI document of a function's HTTP routes, from its pydantic models; and a docs page.

:func:`document` is pure: the request and response models give the schemas of the
JSON route, the Open Inference Protocol routes get the protocol's tensor schemas (with
the function's tensors listed), and the server's own routes are always there. The server
answers it on ``GET /openapi.json`` and renders it on ``GET /docs``: one self-contained
HTML page (no CDN: nothing to fetch but the document) that lists the routes with their
schemas and can send a request.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema

from runtime.function import Function
from runtime.server import oip

__all__ = ["DOCS_HTML", "document"]

_REF = "#/components/schemas/{model}"


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


def _error(description: str) -> dict[str, Any]:
    return _ok(description, {"$ref": "#/components/schemas/Error"})


def _get(summary: str, schema: dict[str, Any] | None = None, **responses: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": _ok(summary, schema), **responses}}}


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "id": {"type": "string", "description": "also in the server log"},
                "fields": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["code", "message", "id"],
        }
    },
}

_TENSOR = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                "INT64", "FP16", "FP32", "FP64", "BF16", "BYTES",
            ],
        },
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "parameters": {"type": "object"},
        "data": {"description": "row-major values, flat or nested (absent when binary)"},
    },
    "required": ["name", "shape"],
}  # fmt: skip

_INFER_REQUEST = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "description": "non-tensor request fields"},
        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
        "outputs": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["inputs"],
}

_INFER_RESPONSE = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": ["string", "null"]},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
    },
}


def _tensor_list(tensors: list[dict[str, Any]]) -> str:
    return ", ".join(f"`{t['name']}` {t['datatype']} {t['shape']}" for t in tensors)


def _inference_paths(fn: Function, schemas: dict[str, Any]) -> dict[str, Any]:
    assert fn.request_model is not None and fn.response_model is not None
    req, resp = fn.request_model.__name__, fn.response_model.__name__
    one = {"$ref": _REF.format(model=req)}
    answer = {
        "allOf": [
            {"$ref": _REF.format(model=resp)},
            {
                "type": "object",
                "properties": {"model_version": {"type": ["integer", "null"]}},
            },
        ]
    }
    schemas["Answer"] = answer
    answer_ref = {"$ref": "#/components/schemas/Answer"}
    json_route = {
        "post": {
            "summary": fn.spec.description or f"call {fn.name}",
            "description": "One request object, or an array of them (one answer each).",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [one, {"type": "array", "items": one}]}
                    }
                },
            },
            "responses": {
                "200": _ok(
                    "the answer (an array for an array)",
                    {"oneOf": [answer_ref, {"type": "array", "items": answer_ref}]},
                ),
                "400": _error("the request does not fit the request model; fields named"),
                "503": _error("still loading the model, or overloaded (Retry-After)"),
            },
        }
    }
    inputs = oip.tensor_metadata(fn.request_model)
    outputs = oip.tensor_metadata(fn.response_model)
    infer = {
        "post": {
            "summary": "Open Inference Protocol inference (JSON or binary tensors)",
            "description": (
                f"Inputs: {_tensor_list(inputs)}. Outputs: {_tensor_list(outputs)}. "
                "Binary tensors: set Inference-Header-Content-Length to the length of the "
                "JSON part and append raw little-endian bytes per input "
                "(parameters.binary_data_size)."
            ),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/InferenceRequest"}
                    },
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "200": _ok("output tensors", {"$ref": "#/components/schemas/InferenceResponse"}),
                "400": _error("a tensor does not fit (the input is named)"),
                "404": _error("no such model or version (the versions are named)"),
            },
        }
    }
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    model_meta = _get("model metadata: tensors and versions")
    model_meta["get"]["parameters"] = [name]
    model_ready = _get("model readiness", None, **{"503": _ok("not ready")})
    model_ready["get"]["parameters"] = [name]
    return {
        "/": json_route,
        f"/{fn.name}": json_route,
        "/v2": _get("server metadata"),
        "/v2/health/live": _get("liveness"),
        "/v2/health/ready": _get("readiness", None, **{"503": _ok("not ready")}),
        "/v2/models/{name}": model_meta,
        "/v2/models/{name}/ready": model_ready,
        "/v2/models/{name}/infer": {"post": {**infer["post"], "parameters": [name]}},
        "/v2/models/{name}/versions/{version}/infer": {
            "post": {**infer["post"], "parameters": [name, version]}
        },
    }


def document(fn: Function) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``fn``'s routes (inference and event functions).

    Example:
        >>> from runtime.registry import discover
        >>> doc = document(discover("functions").get("predict"))  # doctest: +SKIP
        >>> doc["components"]["schemas"]["PredictRequest"]["required"]  # doctest: +SKIP
        ['instances']
    """
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    if fn.request_model is not None and fn.response_model is not None:
        _, defs = models_json_schema(
            [(fn.request_model, "validation"), (fn.response_model, "serialization")],
            ref_template=_REF,
        )
        schemas.update(defs.get("$defs", {}))
        schemas.update(
            {
                "Tensor": _TENSOR,
                "InferenceRequest": _INFER_REQUEST,
                "InferenceResponse": _INFER_RESPONSE,
            }
        )
        paths.update(_inference_paths(fn, schemas))
    elif fn.spec.is_event:
        paths["/"] = {
            "post": {
                "summary": fn.spec.description or f"deliver a CloudEvent to {fn.name}",
                "description": "CloudEvents over HTTP: binary mode (ce-* headers), "
                "structured mode or a batch.",
                "responses": {
                    "200": _ok("reply event(s), binary mode"),
                    "204": _ok("handled, no reply"),
                    "400": _error("the event is invalid (not retried)"),
                },
            }
        }
    paths.update(
        {
            "/healthz": _get("liveness"),
            "/readyz": _get("readiness", None, **{"503": _ok("not ready, with the reason")}),
            "/metrics": _get("Prometheus metrics"),
            "/openapi.json": _get("this document"),
            "/docs": _get("this document, rendered"),
        }
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": fn.name,
            "version": "1",
            "description": fn.spec.description or f"mlfn {fn.spec.kind} function {fn.name}",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }


DOCS_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>API docs</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}
h1{margin-bottom:.2em}.op{border:1px solid #ccc;border-radius:6px;margin:.8em 0;padding:.6em .9em}
.m{display:inline-block;min-width:3.5em;font-weight:600;text-transform:uppercase}
.get{color:#1565c0}.post{color:#2e7d32}code,pre,textarea{font:13px ui-monospace,monospace}
pre{background:#f6f8fa;padding:.6em;overflow:auto;max-height:24em}
textarea{width:100%;height:8em}details{margin:.3em 0}button{margin:.3em 0}
</style></head><body>
<h1 id="title">API</h1><p id="desc"></p><div id="ops">loading openapi.json ...</div>
<script>
const base = location.pathname.replace(/docs\\/?$/, "");
const esc = s => String(s).replace(/[&<>]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;"})[c]);
const pre = v => "<pre>" + esc(JSON.stringify(v, null, 2)) + "</pre>";
function resolve(doc, s, depth) {
  if (!s || depth > 6) return s;
  if (s.$ref) return resolve(doc, doc.components.schemas[s.$ref.split("/").pop()], depth + 1);
  if (Array.isArray(s)) return s.map(x => resolve(doc, x, depth + 1));
  if (typeof s !== "object") return s;
  const out = {};
  for (const k in s) out[k] = resolve(doc, s[k], depth + 1);
  return out;
}
async function send(i, method, path) {
  const body = document.getElementById("b" + i), out = document.getElementById("o" + i);
  const url = base + path.replace(/^\\//, "").replace("{name}", document.title)
    .replace("{version}", "1");
  try {
    const r = await fetch(url, method === "get" ? {} :
      {method: "POST", headers: {"Content-Type": "application/json"}, body: body.value});
    out.textContent = r.status + " " + r.statusText + "\\n" + await r.text();
  } catch (e) { out.textContent = String(e); }
}
fetch(base + "openapi.json").then(r => r.json()).then(doc => {
  document.title = doc.info.title;
  document.getElementById("title").textContent = doc.info.title;
  document.getElementById("desc").textContent = doc.info.description;
  let html = "", i = 0;
  for (const [path, ops] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(ops)) {
    i++;
    const body = op.requestBody && op.requestBody.content["application/json"];
    html += `<div class="op"><span class="m ${method}">${method}</span> <code>${esc(path)}</code>
      &nbsp;${esc(op.summary || "")}<div>${esc(op.description || "")}</div>`;
    if (body) html += `<details><summary>request schema</summary>${pre(resolve(doc, body.schema, 0))}</details>`;
    for (const [code, r] of Object.entries(op.responses || {})) {
      const c = r.content && r.content["application/json"];
      html += c ? `<details><summary>${code}: ${esc(r.description)}</summary>${pre(resolve(doc, c.schema, 0))}</details>`
                : `<div>${code}: ${esc(r.description)}</div>`;
    }
    html += `<details><summary>try it</summary>` + (body ? `<textarea id="b${i}">{}</textarea>` : "") +
      `<button onclick="send(${i}, '${method}', '${path}')">send</button><pre id="o${i}"></pre></details></div>`;
  }
  document.getElementById("ops").innerHTML = html;
}).catch(e => { document.getElementById("ops").textContent = "cannot load openapi.json: " + e; });
</script></body></html>
"""
"""The docs page: renders ``openapi.json`` (fetched relative to the page) without a CDN."""


def document_json(fn: Function) -> bytes:
    """:func:`document` as JSON bytes, as ``GET /openapi.json`` sends it."""
    return json.dumps(document(fn)).encode()
