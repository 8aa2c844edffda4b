"""The spec as ``mlfn dev`` runs it: the local platform's defaults, resolved in one place.

Knative's cluster defaults suit a cluster (a 60 s stable window, unbounded scale); on a
laptop a function should scale to zero in seconds and never fork more than a few
instances. Where a function leaves a field at the spec's default, the local platform
uses its own (``MLFN_PLATFORM_*``); a value the function sets always wins.
``mlfn list --backend local`` prints the result.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from localplatform.settings import PlatformSettings
from runtime.spec import FunctionSpec

__all__ = ["effective_spec"]


def effective_spec(spec: FunctionSpec, platform: PlatformSettings) -> FunctionSpec:
    """``spec`` with the local defaults applied (pure).

    - ``scaling.stable_window``: ``MLFN_PLATFORM_STABLE_WINDOW_SECONDS`` unless set;
    - ``scaling.max_scale``: ``MLFN_PLATFORM_MAX_INSTANCES`` when 0 (unlimited);
    - ``scaling.min_scale`` and ``initial_scale``: at most ``max_scale``.

    Example:
        >>> s = FunctionSpec(name="f", kind="event", module="m", entrypoint="f")
        >>> effective_spec(s, PlatformSettings()).scaling.max_scale
        8
    """
    scaling = spec.scaling
    updates: dict[str, Any] = {}
    if "stable_window" not in scaling.model_fields_set:
        updates["stable_window"] = timedelta(seconds=platform.stable_window_seconds)
    max_scale = scaling.max_scale or platform.max_instances
    updates["max_scale"] = max_scale
    updates["min_scale"] = min(scaling.min_scale, max_scale)
    updates["initial_scale"] = min(scaling.initial_scale, max_scale)
    return spec.model_copy(update={"scaling": scaling.model_copy(update=updates)})
