"""mlfn's local platform: runs every function on one machine with Knative's observable behaviour.

A gateway (routing, activator), a concurrency autoscaler (Knative's KPA), revisions and
traffic splits, and instances forked from a pre-warmed zygote that run the same server as
the containers do. ``mlfn dev`` starts it; ``mlfn status`` and ``mlfn rollout`` talk to it.

The pure parts are importable on their own (no I/O, clock passed in)::

    from localplatform import Autoscaler, ConcurrencyWindow, Policy, Traffic, route
"""

from localplatform.autoscaler import Autoscaler, ConcurrencyWindow, Decision, Policy
from localplatform.control import rollout, status, status_text
from localplatform.errors import PlatformError, PlatformRequestError, RolloutError
from localplatform.routing import Route, Traffic, route

__all__ = [
    "Autoscaler",
    "ConcurrencyWindow",
    "Decision",
    "PlatformError",
    "PlatformRequestError",
    "Policy",
    "RolloutError",
    "Route",
    "Traffic",
    "rollout",
    "route",
    "status",
    "status_text",
]
