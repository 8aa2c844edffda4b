"""mlfn's Knative back end: turns function specs into cluster objects, builds images, applies them.

Build, then apply: :mod:`knative.manifests` holds pure builders (specs in, plain dicts
out); :mod:`knative.cluster` is the thin layer that talks to the Kubernetes API;
:mod:`knative.deploy` and :mod:`knative.rollout` combine the two and return status
objects; :mod:`knative.build` makes the images. Errors: :mod:`knative.errors`.
"""

from knative.cluster import Cluster, Readiness, connect
from knative.deploy import ObjectStatus, apply_all, delete_all
from knative.errors import (
    BuildError,
    ClusterError,
    ForbiddenError,
    KnativeError,
    NoKubeconfigError,
    NotInstalledError,
    NotReadyError,
    RenderError,
    UnauthorizedError,
    UnreachableError,
)
from knative.manifests import Rendered, RenderOptions, render
from knative.rollout import RolloutResult, rollout

__all__ = [
    "BuildError",
    "Cluster",
    "ClusterError",
    "ForbiddenError",
    "KnativeError",
    "NoKubeconfigError",
    "NotInstalledError",
    "NotReadyError",
    "ObjectStatus",
    "Readiness",
    "RenderError",
    "RenderOptions",
    "Rendered",
    "RolloutResult",
    "UnauthorizedError",
    "UnreachableError",
    "apply_all",
    "connect",
    "delete_all",
    "render",
    "rollout",
]
