"""Knative admission rules that schemas cannot express, checked before anything is applied.

The webhooks of Knative Serving reject, among others: more than one container port, a
port other than the serving one in probes, reserved env names, ``nodeSelector`` or
``tolerations`` without their feature flag, annotation values that do not parse, and a
request timeout above ``max-revision-timeout-seconds`` (600 by default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from knative.manifests.common import Obj

__all__ = ["RESERVED_ENV", "admission_problems"]

RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
MAX_REVISION_TIMEOUT = 600
_GO_DURATION = re.compile(r"^\d+(\.\d+)?(ms|s|m|h)$|^0$")
_INT_ANNOTATIONS = ("min-scale", "max-scale", "initial-scale")
_DURATION_ANNOTATIONS = ("scale-down-delay", "window", "scale-to-zero-pod-retention-period")
_FLAG_FIELDS = {
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "tolerations": "kubernetes.podspec-tolerations",
    "emptyDir": "kubernetes.podspec-emptydir",
}


def _service_problems(obj: Obj, flags: Mapping[str, str]) -> list[str]:
    name = obj["metadata"]["name"]
    template = obj["spec"]["template"]
    pod = template["spec"]
    problems = []
    containers = pod.get("containers", [])
    if len(containers) != 1:
        problems.append(f"Service {name}: {len(containers)} containers; mlfn renders exactly one")
    for c in containers:
        if len(c.get("ports", [])) > 1:
            problems.append(f"Service {name}: more than one container port; Knative allows one")
        for probe in ("readinessProbe", "livenessProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            served = [p["containerPort"] for p in c.get("ports", [])]
            if port is not None and port not in served:
                problems.append(f"Service {name}: {probe} port {port} is not the container port")
        reserved = RESERVED_ENV & {e["name"] for e in c.get("env", [])}
        if reserved:
            problems.append(
                f"Service {name}: env {sorted(reserved)} is reserved by Knative; "
                "rename it in the function's env="
            )
    for field, flag in _FLAG_FIELDS.items():
        used = field in pod or (
            field == "emptyDir" and any("emptyDir" in v for v in pod.get("volumes", []))
        )
        if used and flags.get(flag) != "enabled":
            problems.append(f"Service {name}: {field} needs {flag}: enabled in config-features")
    if pod.get("timeoutSeconds", 0) > MAX_REVISION_TIMEOUT:
        problems.append(
            f"Service {name}: timeoutSeconds {pod['timeoutSeconds']} is above Knative's "
            f"default max-revision-timeout-seconds ({MAX_REVISION_TIMEOUT}); lower "
            "timeout_seconds or use job=True for long work"
        )
    annotations = template["metadata"].get("annotations", {})
    for key, value in annotations.items():
        short = key.removeprefix("autoscaling.knative.dev/")
        if short in _INT_ANNOTATIONS and not value.isdigit():
            problems.append(f"Service {name}: {key}={value!r} is not a whole number")
        if short in _DURATION_ANNOTATIONS and not _GO_DURATION.match(value):
            problems.append(f"Service {name}: {key}={value!r} is not a Go duration")
    if annotations.get("autoscaling.knative.dev/class", "").startswith("hpa") and annotations.get(
        "autoscaling.knative.dev/metric"
    ) not in ("cpu", "memory"):
        problems.append(
            f"Service {name}: the HPA class scales on cpu or memory only; "
            "use the default KPA class for concurrency or rps"
        )
    return problems


def admission_problems(objects: Sequence[Obj], flags: Mapping[str, str]) -> list[str]:
    """What Knative's webhooks would reject in ``objects``, given the ``config-features`` flags.

    Returns:
        One sentence per problem (empty when all would be admitted).
    """
    problems: list[str] = []
    for obj in objects:
        if obj.get("kind") == "Service" and obj.get("apiVersion", "").startswith(
            "serving.knative.dev"
        ):
            problems += _service_problems(obj, flags)
    return problems
