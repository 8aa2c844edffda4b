"""Pure builders: function specs in, plain-dict Kubernetes objects out. No I/O here.

Example:
    >>> from runtime.spec import FunctionSpec
    >>> spec = FunctionSpec(name="predict", kind="inference", module="m", entrypoint="predict")
    >>> [o["kind"] for o in render([spec], RenderOptions()).all()]
    ['ConfigMap', 'NetworkPolicy', 'NetworkPolicy', 'NetworkPolicy', 'ServiceAccount', 'Service']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from knative.effective import effective_spec
from knative.errors import RenderError
from knative.manifests.admission import admission_problems
from knative.manifests.common import Obj, RenderOptions
from knative.manifests.eventing import (
    broker,
    broker_config,
    brokers_used,
    dead_letter_topics,
    jobsink,
    kafka_sink,
    kafka_sources,
    triggers,
)
from knative.manifests.features import feature_patches, required_flags
from knative.manifests.network import network_policies
from knative.manifests.rbac import rbac_objects
from knative.manifests.service import build_service
from runtime.spec import FunctionSpec

__all__ = ["Obj", "RenderOptions", "Rendered", "function_objects", "render"]


@dataclass
class Rendered:
    """Rendered objects, grouped as they are written to files and applied.

    Attributes:
        cluster: patches to Knative's own config (namespace ``knative-serving``).
        shared: namespace-wide objects: broker config, brokers, Kafka sinks, policies.
        functions: each function's objects, by function name.
    """

    cluster: list[Obj] = field(default_factory=list)
    shared: list[Obj] = field(default_factory=list)
    functions: dict[str, list[Obj]] = field(default_factory=dict)

    def all(self) -> list[Obj]:
        """Every object, in apply order (what others depend on comes first)."""
        return [*self.cluster, *self.shared, *(o for objs in self.functions.values() for o in objs)]


def function_objects(
    spec: FunctionSpec, specs: Sequence[FunctionSpec], opts: RenderOptions
) -> list[Obj]:
    """One function's objects: identity, then the workload, then what delivers events to it."""
    out = rbac_objects(spec, specs, opts)
    out.append(jobsink(spec, opts) if spec.job else build_service(spec, opts))
    out += triggers(spec, opts)
    out += kafka_sources(spec, opts)
    return out


def render(
    specs: Sequence[FunctionSpec], opts: RenderOptions, *, only: str | None = None
) -> Rendered:
    """Render every object for ``specs`` (or, with ``only``, one function plus shared objects).

    The specs render as :func:`knative.effective.effective_spec` resolves them.

    Raises:
        RenderError: ``only`` names no function, or Knative would not admit an object.
    """
    specs = [effective_spec(s) for s in specs]
    names = [s.name for s in specs]
    if only is not None and only not in names:
        raise RenderError(f"no function named {only!r}; found: {', '.join(names) or 'none'}")
    out = Rendered(cluster=feature_patches(specs))
    used_brokers = brokers_used(specs)
    if used_brokers:
        out.shared.append(broker_config(opts))
    out.shared += [kafka_sink(t, opts) for t in dead_letter_topics(specs)]
    out.shared += [broker(b, opts) for b in used_brokers]
    out.shared += network_policies(specs, opts)
    for spec in specs:
        if only is None or spec.name == only:
            out.functions[spec.name] = function_objects(spec, specs, opts)
    problems = admission_problems(out.all(), required_flags(specs))
    if problems:
        raise RenderError("Knative would reject the rendered objects:\n  " + "\n  ".join(problems))
    return out
