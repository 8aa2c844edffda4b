"""The Knative Service of one function: autoscaling, resources, probes, security context."""

from __future__ import annotations

from collections.abc import Mapping

from knative.manifests.common import (
    ARTIFACT_SECRET_KEYS,
    CONTAINER_PORT,
    DATABASE_URL_KEY,
    KSVC_API,
    Obj,
    RenderOptions,
    metadata,
    uses_stores,
)
from knative.manifests.monitoring import scrape_annotations
from runtime.spec import FunctionSpec, Scaling, Toleration, format_go_duration

__all__ = [
    "autoscaling_annotations",
    "build_service",
    "container",
    "pod_placement",
]

GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
"""The label NVIDIA's GPU operator (GPU feature discovery) puts on GPU nodes."""

_AUTOSCALING = "autoscaling.knative.dev/"
TMP_MOUNT = "/tmp"
HOME_IN_CONTAINER = "/tmp/mlfn"


def _num(value: float) -> str:
    return f"{value:g}"


def autoscaling_annotations(spec: FunctionSpec) -> dict[str, str]:
    """``autoscaling.knative.dev/*`` annotations from ``spec.scaling``, as it is.

    The back end's own defaults (GPU functions) are applied before, by
    :func:`knative.effective.effective_spec`.
    """
    s: Scaling = spec.scaling
    initial = s.initial_scale
    retention = s.scale_to_zero_retention
    out = {
        "class": s.autoscaler_class,
        "metric": s.metric,
        "target": _num(s.target),
        "target-utilization-percentage": _num(s.target_utilization_percentage),
        "min-scale": str(s.min_scale),
        "max-scale": str(s.max_scale),
        "initial-scale": str(initial),
        "scale-down-delay": format_go_duration(s.scale_down_delay),
        "window": format_go_duration(s.stable_window),
        "panic-window-percentage": _num(s.panic_window_percentage),
        "panic-threshold-percentage": _num(s.panic_threshold_percentage),
    }
    if retention:
        out["scale-to-zero-pod-retention-period"] = format_go_duration(retention)
    return {_AUTOSCALING + k: v for k, v in out.items()}


def _resources(spec: FunctionSpec) -> Obj:
    r = spec.resources
    requests = {"cpu": r.cpu, "memory": r.memory}
    limits = {"memory": r.memory_limit or r.memory}
    if r.cpu_limit:
        limits["cpu"] = r.cpu_limit
    if r.gpus:
        limits[r.gpu_resource] = str(r.gpus)
    return {"requests": requests, "limits": limits}


def _toleration(t: Toleration) -> Obj:
    out: Obj = {"key": t.key, "operator": t.operator}
    if t.value is not None:
        out["value"] = t.value
    if t.effect is not None:
        out["effect"] = t.effect
    return out


def pod_placement(spec: FunctionSpec) -> Obj:
    """nodeSelector and tolerations: the spec's, or NVIDIA's defaults for GPU functions.

    Knative admits these only with ``kubernetes.podspec-nodeselector`` and
    ``kubernetes.podspec-tolerations`` enabled (see :mod:`knative.manifests.features`).
    """
    r = spec.resources
    out: Obj = {}
    selector = dict(r.node_selector) or (dict(GPU_NODE_SELECTOR) if spec.is_gpu else {})
    tolerations = [_toleration(t) for t in r.tolerations]
    if spec.is_gpu and not tolerations:
        tolerations = [{"key": r.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
    if selector:
        out["nodeSelector"] = selector
    if tolerations:
        out["tolerations"] = tolerations
    return out


def security_context() -> Obj:
    """The restricted Pod Security Standard, on the container (pod-level needs a flag)."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def env_list(spec: FunctionSpec, opts: RenderOptions) -> list[Obj]:
    """Settings for the container: ``MLFN_*`` from the options, then the spec's own env;
    ``MLFN_DATABASE_URL`` from the database Secret for functions that use the stores."""
    env = {"MLFN_HOME": HOME_IN_CONTAINER, **opts.env, **spec.env}
    out: list[Obj] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    if opts.database_secret and uses_stores(spec) and "MLFN_DATABASE_URL" not in env:
        ref = {"name": opts.database_secret, "key": DATABASE_URL_KEY}
        out.append({"name": "MLFN_DATABASE_URL", "valueFrom": {"secretKeyRef": ref}})
        out += _artifact_env(opts, env)
    return out


def _artifact_env(opts: RenderOptions, env: Mapping[str, str]) -> list[Obj]:
    """``MLFN_ARTIFACT_*`` and the object store's credentials from its Secret."""
    if not opts.artifact_url:
        return []
    out: list[Obj] = [{"name": "MLFN_ARTIFACT_URL", "value": opts.artifact_url}]
    if opts.artifact_endpoint_url:
        out.append({"name": "MLFN_ARTIFACT_ENDPOINT_URL", "value": opts.artifact_endpoint_url})
    if opts.artifact_secret:
        for var, key in ARTIFACT_SECRET_KEYS.items():
            if var not in env:
                ref = {"name": opts.artifact_secret, "key": key}
                out.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
    return out


def container(spec: FunctionSpec, opts: RenderOptions, *, args: list[str]) -> Obj:
    """The one container that runs ``mlfn <args>``: image, env, resources, security, /tmp."""
    out: Obj = {
        "name": "function",
        "image": opts.image_for(spec),
        "command": ["mlfn"],
        "args": args,
        "env": env_list(spec, opts),
        "resources": _resources(spec),
        "securityContext": security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_MOUNT}],
    }
    return out


def tmp_volume() -> Obj:
    """The emptyDir behind ``/tmp``: the only writable path (root filesystem is read-only)."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}


GRPC_HTTP_PORT = CONTAINER_PORT + 1
"""Where a gRPC function's HTTP routes listen inside its pod (Knative routes one port)."""


def _serve_grpc(c: Obj) -> None:
    """Knative's way to serve gRPC: the one container port is named ``h2c``.

    The queue-proxy then speaks HTTP/2 cleartext to it, so the port is mlfn's gRPC
    server; the HTTP routes move to another port inside the pod (metrics, docs). The
    gRPC port opens only once the model is loaded, so a TCP probe on it is the
    readiness check (there is no HTTP port to probe); no liveness probe, as that port
    is closed while a model loads.
    """
    c["args"] = [*c["args"], "--grpc-port", str(CONTAINER_PORT), "--port", str(GRPC_HTTP_PORT)]
    c["ports"] = [{"name": "h2c", "containerPort": CONTAINER_PORT}]
    c["readinessProbe"] = {"tcpSocket": {}, "periodSeconds": 2, "failureThreshold": 3}


def build_service(spec: FunctionSpec, opts: RenderOptions) -> Obj:
    """The Knative Service (``serving.knative.dev/v1``) that serves ``spec``.

    Example:
        >>> from runtime.spec import FunctionSpec
        >>> ksvc = build_service(FunctionSpec(name="predict", kind="inference",
        ...     module="functions.predict", entrypoint="predict"), RenderOptions())
        >>> ksvc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"]
        '0'
    """
    # 0.0.0.0: kubelet sends liveness probes to the pod IP, not to localhost; the port
    # comes from PORT, which Knative sets to the container port.
    c = container(spec, opts, args=["serve", spec.name, "--host", "0.0.0.0"])
    if spec.grpc:
        _serve_grpc(c)
    else:
        c["ports"] = [{"name": "http1", "containerPort": CONTAINER_PORT}]
        c["readinessProbe"] = {
            "httpGet": {"path": "/readyz"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        }
        c["livenessProbe"] = {
            "httpGet": {"path": "/healthz"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        }
    pod: Obj = {
        "serviceAccountName": spec.name,
        "containerConcurrency": spec.scaling.container_concurrency,
        "timeoutSeconds": spec.timeout_seconds,
        "containers": [c],
        "volumes": [tmp_volume()],
        **pod_placement(spec),
    }
    template_meta: Obj = {
        "labels": metadata(spec.name, opts.namespace, spec.name)["labels"],
        "annotations": {**autoscaling_annotations(spec), **scrape_annotations(opts)},
    }
    return {
        "apiVersion": KSVC_API,
        "kind": "Service",
        "metadata": metadata(
            spec.name,
            opts.namespace,
            spec.name,
            annotations={"mlfn.dev/description": spec.description[:200]}
            if spec.description
            else None,
        ),
        "spec": {"template": {"metadata": template_meta, "spec": pod}},
    }
