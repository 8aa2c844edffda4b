"""PingSources: the time trigger of a retrain policy (``every_seconds``) on the cluster.

A retrain function scales to zero, so no timer of its own can fire. Knative's
``PingSource`` (``sources.knative.dev/v1``) posts a CloudEvent of type
``dev.knative.sources.ping`` to the function's Service on a cron schedule; the function
adopts the stored retraining state and trains if the time trigger is due
(:meth:`runtime.retraining.RetrainLoop.tick`). Cron has minute granularity: the schedule
is every ``ceil(every_seconds / 60)`` minutes, and the stored state decides the rest.
``mlfn dev`` runs the same schedule (:mod:`localplatform.ping`), at the exact interval.
"""

from __future__ import annotations

import json
import math

from knative.manifests.common import Obj, RenderOptions, dns_name, metadata, subscriber_ref
from runtime.spec import FunctionSpec

__all__ = ["PING_API", "cron_schedule", "ping_data", "ping_sources"]

PING_API = "sources.knative.dev/v1"


def cron_schedule(every_seconds: float) -> str:
    """A cron schedule firing at least every ``every_seconds`` (cron's floor: a minute).

    Example:
        >>> cron_schedule(30), cron_schedule(300), cron_schedule(7200)
        ('* * * * *', '*/5 * * * *', '0 */2 * * *')
    """
    minutes = max(1, math.floor(every_seconds / 60))
    if minutes == 1:
        return "* * * * *"
    if minutes < 60:
        return f"*/{minutes} * * * *"
    hours = min(24, max(1, math.floor(minutes / 60)))
    return "0 0 * * *" if hours >= 24 else f"0 */{hours} * * *"


def ping_data(spec: FunctionSpec) -> dict[str, str]:
    """The data of each ping: which model's time trigger it is."""
    assert spec.retrain is not None
    return {"model": spec.retrain.model, "reason": "every_seconds"}


def ping_sources(spec: FunctionSpec, opts: RenderOptions) -> list[Obj]:
    """The PingSource of ``spec``'s time trigger (none without ``retrain.every_seconds``)."""
    policy = spec.retrain
    if policy is None or policy.every_seconds is None:
        return []
    return [
        {
            "apiVersion": PING_API,
            "kind": "PingSource",
            "metadata": metadata(dns_name(spec.name, "ping"), opts.namespace, spec.name),
            "spec": {
                "schedule": cron_schedule(policy.every_seconds),
                "contentType": "application/json",
                "data": json.dumps(ping_data(spec), sort_keys=True),
                "sink": {"ref": subscriber_ref(spec, opts.namespace)},
            },
        }
    ]
