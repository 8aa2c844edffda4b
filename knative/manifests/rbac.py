"""ServiceAccounts and least-privilege RBAC: a function gets exactly what it uses, often nothing.

A plain function gets a ServiceAccount that does not even mount a token. The only
permission a function needs today is the canary rollout a retraining function drives:
``get``/``patch`` on the Knative Service that serves the retrained model (by name), and
``get``/``list`` on revisions to find the previous one.
"""

from __future__ import annotations

from collections.abc import Sequence

from knative.manifests.common import Obj, RenderOptions, dns_name, metadata
from runtime.spec import FunctionSpec

__all__ = ["rbac_objects", "rollout_targets", "service_account"]


def rollout_targets(spec: FunctionSpec, specs: Sequence[FunctionSpec]) -> list[str]:
    """Services whose traffic ``spec`` shifts: canary inference functions serving its model."""
    if spec.retrain is None:
        return []
    return [
        other.name
        for other in specs
        if other.kind == "inference"
        and other.model is not None
        and other.model.name == spec.retrain.model
        and other.rollout.strategy == "canary"
    ]


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
    """ServiceAccount, plus Role and RoleBinding when the function drives a rollout."""
    targets = rollout_targets(spec, specs)
    out = [service_account(spec, opts, needs_token=bool(targets))]
    if not targets:
        return out
    role = dns_name(spec.name, "rollout")
    out.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(role, opts.namespace, spec.name),
            "rules": [
                {
                    "apiGroups": ["serving.knative.dev"],
                    "resources": ["services"],
                    "resourceNames": targets,
                    "verbs": ["get", "patch"],
                },
                {
                    "apiGroups": ["serving.knative.dev"],
                    "resources": ["revisions"],
                    "verbs": ["get", "list"],
                },
            ],
        }
    )
    out.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(role, opts.namespace, spec.name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [
                {"kind": "ServiceAccount", "name": spec.name, "namespace": opts.namespace}
            ],
        }
    )
    return out
