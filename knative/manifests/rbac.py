"""ServiceAccounts: a function gets exactly what it uses, which is nothing of the API.

A function's ServiceAccount does not even mount a token: no function talks to the
Kubernetes API. Progressive delivery is Flagger's, and the one step that writes to the
API (pinning a canary Service to a published model version) runs as a job of its own
with its own, narrow Role (:mod:`knative.manifests.pin`).
"""

from __future__ import annotations

from collections.abc import Sequence

from knative.manifests.common import Obj, RenderOptions, metadata
from runtime.spec import FunctionSpec

__all__ = ["rbac_objects", "service_account"]


def service_account(spec: FunctionSpec, opts: RenderOptions, *, needs_token: bool) -> Obj:
    """The function's own ServiceAccount; the API token is mounted only when it has a Role."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(spec.name, opts.namespace, spec.name),
        "automountServiceAccountToken": needs_token,
    }


def rbac_objects(
    spec: FunctionSpec, specs: Sequence[FunctionSpec], opts: RenderOptions
) -> list[Obj]:
    """The function's ServiceAccount (no token, no Role)."""
    return [service_account(spec, opts, needs_token=False)]
