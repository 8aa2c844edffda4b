"""The step that turns a published model version into a Flagger canary: pin the Service.

A canary function's pods serve one pinned model version (``MLFN_MODEL_VERSION``), so a
new version has to become a new *revision* for Flagger to analyse. The engine does the
rest: a Trigger on ``mlfn.model.published`` (subject: the model) starts a JobSink job
that runs ``mlfn rollout <fn> --cluster --pin-event <event>``, which sets
``MLFN_MODEL_VERSION`` in the Service's revision template
(:func:`knative.rollout.pin_model_version`). Knative creates the revision, Flagger
analyses it, promotes or rolls back. mlfn runs no controller of its own on the cluster.

Objects per canary function with a model: a ServiceAccount with a Role that may only
``get`` and ``patch`` that one Knative Service, the JobSink, and the Trigger.
"""

from __future__ import annotations

from knative.manifests.common import (
    JOB_EVENT_DIR,
    JOBSINK_API,
    Obj,
    RenderOptions,
    delivery_spec,
    dns_name,
    labels,
    metadata,
)
from knative.manifests.service import container, tmp_volume
from runtime.function import MODEL_PUBLISHED
from runtime.spec import Delivery, FunctionSpec

__all__ = ["PIN_ROLE_LABEL", "needs_pin", "pin_name", "pin_objects"]

PIN_ROLE_LABEL = {"mlfn.dev/role": "model-pin"}
"""On the pin job's pods: the only mlfn pods that may reach the API server."""


def needs_pin(spec: FunctionSpec) -> bool:
    """A Knative Service that Flagger canaries and that serves a model."""
    return spec.rollout.strategy == "canary" and spec.model is not None and not spec.job


def pin_name(spec: FunctionSpec) -> str:
    return dns_name(spec.name, "pin")


def _broker(spec: FunctionSpec) -> str:
    for sub in spec.subscriptions:
        if sub.name == f"{spec.name}-model-updates":
            return sub.broker
    return "default"


def pin_objects(spec: FunctionSpec, opts: RenderOptions) -> list[Obj]:
    """ServiceAccount, Role, RoleBinding, JobSink and Trigger of ``spec``'s pin step."""
    assert spec.model is not None
    name = pin_name(spec)
    pod_labels = {**labels(spec.name), **PIN_ROLE_LABEL}
    c = container(
        spec,
        opts,
        args=["rollout", spec.name, "--cluster", "--pin-event", f"{JOB_EVENT_DIR}/event"],
    )
    c["image"] = opts.images["cpu"]
    c["resources"] = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(name, opts.namespace, spec.name),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(name, opts.namespace, spec.name),
            "rules": [
                {
                    "apiGroups": ["serving.knative.dev"],
                    "resources": ["services"],
                    "resourceNames": [spec.name],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(name, opts.namespace, spec.name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": opts.namespace}],
        },
        {
            "apiVersion": JOBSINK_API,
            "kind": "JobSink",
            "metadata": metadata(name, opts.namespace, spec.name),
            "spec": {
                "job": {
                    "metadata": {"labels": pod_labels},
                    "spec": {
                        "backoffLimit": 3,
                        "activeDeadlineSeconds": 300,
                        "ttlSecondsAfterFinished": 3600,
                        "template": {
                            "metadata": {"labels": pod_labels},
                            "spec": {
                                "restartPolicy": "Never",
                                "serviceAccountName": name,
                                "containers": [c],
                                "volumes": [tmp_volume()],
                            },
                        },
                    },
                }
            },
        },
        {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": metadata(name, opts.namespace, spec.name),
            "spec": {
                "broker": _broker(spec),
                "filters": [{"exact": {"type": MODEL_PUBLISHED, "subject": spec.model.name}}],
                "subscriber": {
                    "ref": {
                        "apiVersion": JOBSINK_API,
                        "kind": "JobSink",
                        "name": name,
                        "namespace": opts.namespace,
                    }
                },
                "delivery": delivery_spec(Delivery(), opts.namespace),
            },
        },
    ]
