"""Flagger objects for canary functions: a ``Canary`` per function, the ``MetricTemplate``s.

Progressive delivery on a cluster is Flagger's job (provider ``knative``): it watches the
Knative Service, and when a new revision appears it shifts traffic by ``stepWeight``
every ``interval`` while the checks pass, promotes at ``maxWeight``, and rolls back
after ``threshold`` failed checks. :mod:`localplatform.canary` runs the same state
machine on ``mlfn dev``; both read the :class:`~runtime.spec.Rollout` of the spec.

The checks are three ``MetricTemplate`` queries (Prometheus) over the series every
``mlfn serve`` exports, selected by the candidate revision (Flagger fills ``{{ route }}``
with the Service's latest created revision on Knative) over the last ``interval``:

- ``mlfn-request-success-rate``: percent of non-5xx responses;
- ``mlfn-request-duration-p99``: the 99th percentile latency in milliseconds;
- ``mlfn-model-quality``: the lowest ``mlfn_model_quality`` (the served version's
  holdout figure named by the ``metric`` template variable) of the revision's pods.

No requests in an interval makes the first two NaN, which Flagger counts as a failed
check ("no values found"), as the local controller does.
"""

from __future__ import annotations

from collections.abc import Sequence

from knative.manifests.common import KSVC_API, Obj, RenderOptions, metadata
from runtime.spec import FunctionSpec, format_go_duration

__all__ = [
    "FLAGGER_API",
    "QUERIES",
    "canaries_used",
    "canary",
    "metric_templates",
]

FLAGGER_API = "flagger.app/v1beta1"

_SELECTOR = 'namespace="{{ namespace }}", revision="{{ route }}"'
QUERIES: dict[str, str] = {
    "mlfn-request-success-rate": (
        "100 * sum(rate(mlfn_requests_total{" + _SELECTOR + ', code!~"5.."}[{{ interval }}]))'
        " / sum(rate(mlfn_requests_total{" + _SELECTOR + "}[{{ interval }}]))"
    ),
    "mlfn-request-duration-p99": (
        "1000 * histogram_quantile(0.99, sum by (le) ("
        "rate(mlfn_request_duration_seconds_bucket{" + _SELECTOR + "}[{{ interval }}])))"
    ),
    "mlfn-model-quality": (
        "min(mlfn_model_quality{" + _SELECTOR + ', metric="{{ variables.metric }}"})'
    ),
}
"""The PromQL of each MetricTemplate (Flagger's Go-template variables in ``{{ }}``)."""


def canaries_used(specs: Sequence[FunctionSpec]) -> list[FunctionSpec]:
    """The functions Flagger runs canaries for: Knative Services with ``strategy="canary"``."""
    return [s for s in specs if s.rollout.strategy == "canary" and not s.job]


def metric_templates(opts: RenderOptions) -> list[Obj]:
    """The namespace's MetricTemplates (one per check), read from ``opts.prometheus_url``."""
    return [
        {
            "apiVersion": FLAGGER_API,
            "kind": "MetricTemplate",
            "metadata": metadata(name, opts.namespace),
            "spec": {
                "provider": {"type": "prometheus", "address": opts.prometheus_url},
                "query": query,
            },
        }
        for name, query in QUERIES.items()
    ]


def _check(name: str, template: str, interval: str, **bounds: float) -> Obj:
    return {
        "name": name,
        "templateRef": {"name": template},
        "thresholdRange": bounds,
        "interval": interval,
    }


def canary(spec: FunctionSpec, opts: RenderOptions) -> Obj:
    """The ``Canary`` (provider ``knative``) that analyses new revisions of ``spec``'s Service.

    Example:
        >>> from runtime.spec import FunctionSpec
        >>> c = canary(FunctionSpec(name="predict", kind="inference", module="m",
        ...     entrypoint="f", rollout={"strategy": "canary"}), RenderOptions())
        >>> c["spec"]["analysis"]["stepWeight"], c["spec"]["analysis"]["interval"]
        (20, '30s')
    """
    r = spec.rollout
    interval = format_go_duration(r.interval)
    metrics = [
        _check("success-rate", "mlfn-request-success-rate", interval, min=r.min_success_rate),
        _check(
            "latency-p99",
            "mlfn-request-duration-p99",
            interval,
            max=r.max_latency_p99.total_seconds() * 1000,
        ),
    ]
    if r.min_model_quality is not None:
        quality = _check("model-quality", "mlfn-model-quality", interval, min=r.min_model_quality)
        quality["templateVariables"] = {"metric": r.quality_metric}
        metrics.append(quality)
    analysis: Obj = {"interval": interval, "threshold": r.threshold}
    if r.iterations:
        analysis["iterations"] = r.iterations
    else:
        analysis["maxWeight"] = r.max_weight
        analysis["stepWeight"] = r.step_weight
    analysis["metrics"] = metrics
    return {
        "apiVersion": FLAGGER_API,
        "kind": "Canary",
        "metadata": metadata(spec.name, opts.namespace, spec.name),
        "spec": {
            "provider": "knative",
            "targetRef": {"apiVersion": KSVC_API, "kind": "Service", "name": spec.name},
            "progressDeadlineSeconds": max(600, spec.timeout_seconds * 2),
            "analysis": analysis,
        },
    }
