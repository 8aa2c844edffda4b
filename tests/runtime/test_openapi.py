"""The OpenAPI document of a function's routes, from its models; the docs page renders it."""

from __future__ import annotations

import jsonschema
import pytest

from mlfn.settings import Settings
from runtime.registry import discover
from runtime.server import Request, create_app
from runtime.server.openapi import document

pytestmark = pytest.mark.unit


def _predict() -> object:
    return discover("functions").get("predict")


def test_the_json_route_schemas_come_from_the_pydantic_models() -> None:
    doc = document(_predict())  # type: ignore[arg-type]
    schemas = doc["components"]["schemas"]
    assert schemas["PredictRequest"]["required"] == ["instances"]
    assert "probabilities" in schemas["PredictResponse"]["properties"]
    body = doc["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][0] == {"$ref": "#/components/schemas/PredictRequest"}
    infer = doc["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]
    assert "`instances` FP64 [-1, -1, -1]" in infer["description"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    # the request schema validates a real request and rejects a wrong one
    request = {**schemas["PredictRequest"], "components": doc["components"]}
    resolver_doc = {"components": doc["components"], **request}
    jsonschema.validate({"instances": [[0.5] * 64]}, resolver_doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"instances": [[2.0] * 64]}, resolver_doc)


def test_the_server_answers_the_document_and_a_self_contained_page() -> None:
    app = create_app(_predict(), Settings(), start=False)  # type: ignore[arg-type]
    r = app.handle(Request("GET", "/openapi.json", {}))
    assert r.status == 200 and r.json()["info"]["title"] == "predict"
    page = app.handle(Request("GET", "/docs", {}))
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b'fetch(base + "openapi.json")' in page.body
    assert b"http://" not in page.body and b"https://" not in page.body  # no CDN
    assert app.handle(Request("POST", "/docs", {})).status == 405
