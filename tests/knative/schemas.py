"""Offline validation of rendered objects, as the API server would do it.

Knative kinds: the CRD's ``openAPIV3Schema`` from ../shared/knative-crds, with
``x-kubernetes-int-or-string`` as integer-or-string and every object schema that has
``properties`` and no ``x-kubernetes-preserve-unknown-fields`` closed
(``additionalProperties: false``), so a field the schema does not know fails instead of
being silently pruned. Core kinds: kubernetes-validate in strict mode.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CRDS = SHARED / "knative-crds"
K8S_VERSION = "1.33.0"


def _close(node: Any) -> Any:
    if isinstance(node, list):
        return [_close(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _close(v) for k, v in node.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable"):
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> closed JSON schema, for every CRD version in ../shared."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = _close(version["schema"]["openAPIV3Schema"])
                # the API server handles the root fields itself, whatever the CRD says
                schema["properties"]["metadata"] = {"type": "object"}
                schema["properties"].setdefault("apiVersion", {"type": "string"})
                schema["properties"].setdefault("kind", {"type": "string"})
                out[(f"{group}/{version['name']}", kind)] = schema
    return out


def validate(obj: dict[str, Any]) -> None:
    """Raise (jsonschema or kubernetes-validate ValidationError) when ``obj`` is invalid."""
    key = (obj["apiVersion"], obj["kind"])
    schema = crd_schemas().get(key)
    if schema is not None:
        jsonschema.Draft7Validator(schema).validate(obj)
        return
    if "." in obj["apiVersion"].split("/")[0] and not obj["apiVersion"].startswith(
        ("rbac.authorization.k8s.io", "networking.k8s.io", "batch")
    ):
        raise LookupError(f"no CRD in {CRDS} for {key}")
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
