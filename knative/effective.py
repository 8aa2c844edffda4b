"""The spec as it is rendered for Knative: the cluster back end's defaults, in one place.

GPU functions get ML-friendly values where the spec leaves them at its defaults:
``initial_scale: 0`` (a new revision does not hold a GPU it does not use yet) and a
scale-to-zero retention period (keeps the warm GPU pod a while after traffic stops).
Everything else renders as the spec says. ``mlfn list --backend knative`` prints the result.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from runtime.spec import FunctionSpec

__all__ = ["GPU_RETENTION", "effective_spec"]

GPU_RETENTION = timedelta(minutes=5)
"""Scale-to-zero retention of a GPU function that does not set its own."""


def effective_spec(spec: FunctionSpec) -> FunctionSpec:
    """``spec`` with the Knative back end's defaults applied (pure).

    Example:
        >>> from runtime.spec import Resources
        >>> s = FunctionSpec(name="f", kind="inference", module="m", entrypoint="f",
        ...                  resources=Resources(gpus=1))
        >>> effective_spec(s).scaling.initial_scale
        0
    """
    scaling = spec.scaling
    updates: dict[str, Any] = {}
    if spec.is_gpu:
        if "initial_scale" not in scaling.model_fields_set:
            updates["initial_scale"] = 0
        if "scale_to_zero_retention" not in scaling.model_fields_set:
            updates["scale_to_zero_retention"] = GPU_RETENTION
    if not updates:
        return spec
    return spec.model_copy(update={"scaling": scaling.model_copy(update=updates)})
