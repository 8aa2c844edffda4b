"""The knative package's exception tree. Every error says what was found and how to fix it.

KnativeError (runtime.errors.MlfnError)
├── RenderError (ValueError)        a spec cannot be turned into valid cluster objects
├── BuildError                      no working image builder, or a build/push failed
└── ClusterError                    talking to the Kubernetes API failed
    ├── NoKubeconfigError           no kubeconfig / in-cluster config to load
    ├── UnreachableError            the API server does not answer
    ├── UnauthorizedError           the API server rejected the credentials (401)
    ├── ForbiddenError              the credentials lack a permission (403)
    ├── NotInstalledError           Knative or its Kafka extension is not installed
    ├── MissingSecretError          a Secret the functions read (the database URL) is absent
    └── NotReadyError               an object did not become Ready (False, or timeout)
"""

from __future__ import annotations

from runtime.errors import MlfnError

__all__ = [
    "BuildError",
    "ClusterError",
    "ForbiddenError",
    "KnativeError",
    "MissingSecretError",
    "NoKubeconfigError",
    "NotInstalledError",
    "NotReadyError",
    "RenderError",
    "UnauthorizedError",
    "UnreachableError",
]


class KnativeError(MlfnError):
    """Root of every error the knative package raises on purpose."""


class RenderError(KnativeError, ValueError):
    """A function spec cannot be rendered into objects Knative would admit."""


class BuildError(KnativeError):
    """No container builder works, or a build or push failed."""


class ClusterError(KnativeError):
    """Talking to the Kubernetes API failed."""


class NoKubeconfigError(ClusterError):
    """No kubeconfig (or in-cluster service account) could be loaded."""


class UnreachableError(ClusterError):
    """The API server did not answer (connection refused, DNS, TLS, timeout)."""


class UnauthorizedError(ClusterError):
    """The API server rejected the credentials (HTTP 401)."""


class ForbiddenError(ClusterError):
    """The credentials lack a permission (HTTP 403)."""


class NotInstalledError(ClusterError):
    """An API group the manifests use is not served: Knative or an extension is missing."""


class MissingSecretError(ClusterError):
    """A Secret that rendered containers read (``secretKeyRef``) does not exist."""


class NotReadyError(ClusterError):
    """An object reported Ready=False, or did not become Ready before the timeout."""

    def __init__(self, message: str, *, reason: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.detail = detail
