"""Cluster-wide Knative config that mlfn's objects need, as server-side-apply patches.

Applied with server-side apply, these own only the keys listed, so the rest of each
ConfigMap (set by the Knative install or an admin) is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from knative.manifests.common import Obj, labels
from knative.manifests.service import autoscaling_annotations
from runtime.spec import FunctionSpec

__all__ = ["WHY", "feature_patches", "required_flags"]

WHY = """\
Why mlfn patches Knative's config (knative-serving and knative-eventing namespaces):
- kubernetes.podspec-nodeselector / kubernetes.podspec-tolerations: GPU functions must
  land on GPU nodes (nodeSelector) that are tainted for GPU work (tolerations); Knative's
  webhook rejects both fields unless these flags are enabled.
- kubernetes.podspec-emptydir: /tmp is an emptyDir because the root filesystem is
  read-only (enabled by default in current Knative; set explicitly so older installs work).
- delivery-timeout (knative-eventing config-features): Triggers and KafkaSources carry a
  per-attempt delivery timeout from the spec; enabled by default in current Knative
  Eventing, set explicitly so older installs accept it.
- allow-zero-initial-scale (config-autoscaler): GPU functions use initial-scale 0 so a new
  revision does not hold a GPU before it gets traffic; Knative refuses initial-scale 0
  unless this is true."""


def required_flags(specs: Sequence[FunctionSpec]) -> dict[str, str]:
    """``config-features`` flags the rendered Services need."""
    flags = {"kubernetes.podspec-emptydir": "enabled"}
    if any(s.is_gpu or s.resources.node_selector for s in specs):
        flags["kubernetes.podspec-nodeselector"] = "enabled"
    if any(s.is_gpu or s.resources.tolerations for s in specs):
        flags["kubernetes.podspec-tolerations"] = "enabled"
    return flags


def feature_patches(specs: Sequence[FunctionSpec]) -> list[Obj]:
    """The ``config-features`` (and, with GPU functions, ``config-autoscaler``) patches."""
    note = {
        "mlfn.dev/why": "needed by mlfn functions; see the mlfn README (Running on Knative, GPU functions)"
    }
    out: list[Obj] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "config-features",
                "namespace": "knative-serving",
                "labels": labels(),
                "annotations": note,
            },
            "data": required_flags(specs),
        }
    ]
    if any(
        d.timeout is not None
        for s in specs
        for d in [*(x.delivery for x in s.sources), *(x.delivery for x in s.subscriptions)]
    ):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "config-features",
                    "namespace": "knative-eventing",
                    "labels": labels(),
                    "annotations": note,
                },
                "data": {"delivery-timeout": "enabled"},
            }
        )
    zero_initial = any(
        autoscaling_annotations(s)["autoscaling.knative.dev/initial-scale"] == "0" for s in specs
    )
    if zero_initial:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "config-autoscaler",
                    "namespace": "knative-serving",
                    "labels": labels(),
                    "annotations": note,
                },
                "data": {"allow-zero-initial-scale": "true"},
            }
        )
    return out
