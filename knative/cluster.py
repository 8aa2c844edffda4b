"""A thin layer over the Kubernetes API: paths, server-side apply, reads, deletes, readiness.

It takes a configured ``kubernetes.client.ApiClient`` (auth and TLS come from the
kubeconfig), speaks plain JSON dicts, converts every foreign error into
:mod:`knative.errors` in one place (:meth:`Cluster._request`) and returns status objects.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knative.errors import (
    ClusterError,
    ForbiddenError,
    NoKubeconfigError,
    NotInstalledError,
    NotReadyError,
    UnauthorizedError,
    UnreachableError,
)
from knative.manifests.common import Obj

__all__ = ["KINDS", "Cluster", "Kind", "Readiness", "connect"]

FIELD_MANAGER = "mlfn"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API, and what provides it."""

    plural: str
    namespaced: bool = True
    has_ready: bool = False
    provider: str = "Kubernetes"


_SERVING = "Knative Serving (CRDs: knative/serving 98e5ef90aa70)"
_EVENTING = "Knative Eventing (CRDs: knative/eventing 8cf4c4b67303)"
_KAFKA = "Knative's Kafka extension eventing-kafka-broker (CRDs: 7d8fe89f4b5e)"
_FLAGGER = "Flagger, provider knative (CRDs: fluxcd/flagger 15bd6ad555e6)"
_OPERATOR = "the Prometheus Operator (or set MLFN_METRICS_SCRAPE=annotations)"

KINDS: dict[tuple[str, str], Kind] = {
    ("v1", "ConfigMap"): Kind("configmaps"),
    ("v1", "ServiceAccount"): Kind("serviceaccounts"),
    ("v1", "Secret"): Kind("secrets"),
    ("rbac.authorization.k8s.io/v1", "Role"): Kind("roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): Kind("rolebindings"),
    ("networking.k8s.io/v1", "NetworkPolicy"): Kind("networkpolicies"),
    ("serving.knative.dev/v1", "Service"): Kind("services", has_ready=True, provider=_SERVING),
    ("serving.knative.dev/v1", "Revision"): Kind("revisions", has_ready=True, provider=_SERVING),
    ("eventing.knative.dev/v1", "Broker"): Kind("brokers", has_ready=True, provider=_EVENTING),
    ("eventing.knative.dev/v1", "Trigger"): Kind("triggers", has_ready=True, provider=_EVENTING),
    ("sinks.knative.dev/v1alpha1", "JobSink"): Kind(
        "jobsinks", has_ready=True, provider=_EVENTING + ", v1.14 or later"
    ),
    ("sources.knative.dev/v1", "PingSource"): Kind(
        "pingsources", has_ready=True, provider=_EVENTING
    ),
    ("sources.knative.dev/v1beta1", "KafkaSource"): Kind(
        "kafkasources", has_ready=True, provider=_KAFKA
    ),
    ("eventing.knative.dev/v1alpha1", "KafkaSink"): Kind(
        "kafkasinks", has_ready=True, provider=_KAFKA
    ),
    ("flagger.app/v1beta1", "MetricTemplate"): Kind("metrictemplates", provider=_FLAGGER),
    ("flagger.app/v1beta1", "Canary"): Kind("canaries", provider=_FLAGGER),
    ("monitoring.coreos.com/v1", "PodMonitor"): Kind("podmonitors", provider=_OPERATOR),
}


def kind_of(obj: Obj) -> Kind:
    try:
        return KINDS[(obj["apiVersion"], obj["kind"])]
    except KeyError:
        raise ClusterError(
            f"mlfn does not know how to apply {obj['apiVersion']} {obj['kind']}"
        ) from None


def _base(api_version: str) -> str:
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    k = KINDS[(api_version, kind)]
    ns = f"/namespaces/{namespace}" if k.namespaced and namespace else ""
    return f"{_base(api_version)}{ns}/{k.plural}"


def object_path(obj: Obj) -> str:
    meta = obj["metadata"]
    return (
        f"{collection_path(obj['apiVersion'], obj['kind'], meta.get('namespace'))}/{meta['name']}"
    )


def describe(obj: Obj) -> str:
    """``Kind/name`` (``namespace``) for messages."""
    return f"{obj['kind']}/{obj['metadata']['name']} in {obj['metadata'].get('namespace', '-')}"


@dataclass(frozen=True)
class Readiness:
    """An object's Ready condition. ``ready`` is None while it has no (current) condition."""

    ready: bool | None
    reason: str = ""
    message: str = ""
    url: str | None = None

    @classmethod
    def of(cls, obj: Obj) -> Readiness:
        status = obj.get("status") or {}
        url = status.get("url") or (status.get("address") or {}).get("url")
        generation = obj.get("metadata", {}).get("generation")
        observed = status.get("observedGeneration")
        if generation is not None and observed is not None and observed < generation:
            return cls(None, "Reconciling", f"generation {generation} not observed yet", url)
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Ready":
                state = {"True": True, "False": False}.get(cond.get("status", ""))
                return cls(state, cond.get("reason", ""), cond.get("message", ""), url)
        return cls(None, "", "", url)


def _verb(method: str) -> str:
    return {"PATCH": "patch (and create)", "GET": "get", "DELETE": "delete"}.get(
        method, method.lower()
    )


class Cluster:
    """The Kubernetes API, as the few calls mlfn makes.

    Args:
        api: a configured ``kubernetes.client.ApiClient``.
        request_timeout: seconds per HTTP request.
    """

    def __init__(self, api: Any, *, request_timeout: float = 15.0) -> None:
        self.api = api
        self.request_timeout = request_timeout

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Obj | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Obj]:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            req = self.api.param_serialize(
                method,
                path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.api.call_api(*req, _request_timeout=self.request_timeout)
            raw = resp.read()
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise UnreachableError(self._unreachable(err)) from err
        except ApiException as err:
            if err.status:
                return int(err.status), _json(err.body)
            raise UnreachableError(self._unreachable(err)) from err
        return int(resp.status), _json(raw)

    def _unreachable(self, err: BaseException) -> str:
        return (
            f"cannot reach the Kubernetes API server at {self.host}: {err}. Check that the "
            "cluster is running and that `kubectl cluster-info` works with this kubeconfig"
        )

    def _fail(self, status: int, body: Obj, method: str, path: str, what: str) -> ClusterError:
        message = body.get("message", "") if isinstance(body, dict) else ""
        if status == 401:
            return UnauthorizedError(
                f"the API server at {self.host} rejected the credentials (401) for {what}: "
                f"{message}. Refresh them (log in again, or get new credentials from your provider)"
            )
        if status == 403:
            details = body.get("details") or {}
            resource = details.get("kind") or path.rsplit("/", 2)[-2]
            parts = path.split("/")
            group = details.get("group") or (parts[2] if parts[1] == "apis" else "")
            full = f"{resource}.{group}" if group else resource
            return ForbiddenError(
                f"forbidden: you may not {_verb(method)} {full} ({what}). Ask a cluster admin "
                f"for a Role granting that verb on {full}; check with `kubectl auth can-i "
                f"{_verb(method).split()[0]} {full}`. API server said: {message}"
            )
        return ClusterError(f"{method} {path} ({what}) failed with HTTP {status}: {message}")

    def check_installed(self, objects: Iterable[Obj]) -> None:
        """Ask discovery for every API group version and kind the objects use.

        Raises:
            NotInstalledError: naming what to install for each missing kind.
        """
        missing: dict[str, None] = {}
        by_version: dict[str, set[str]] = {}
        for obj in objects:
            by_version.setdefault(obj["apiVersion"], set()).add(obj["kind"])
        for api_version, kinds in sorted(by_version.items()):
            status, body = self._request("GET", _base(api_version))
            if status == 404:
                served: set[str] = set()
            elif status >= 400:
                raise self._fail(
                    status, body, "GET", _base(api_version), f"discovery of {api_version}"
                )
            else:
                served = {r.get("kind", "") for r in body.get("resources", [])}
            for kind in sorted(kinds - served):
                missing[
                    f"{kind} ({api_version}): install {kind_of({'apiVersion': api_version, 'kind': kind}).provider}"
                ] = None
        if missing:
            raise NotInstalledError(
                "the cluster does not serve these kinds:\n  "
                + "\n  ".join(missing)
                + "\nInstall Knative Serving, Knative Eventing and eventing-kafka-broker "
                "(see the README, Running on Knative), then run deploy again"
            )

    def get(self, obj: Obj) -> Obj | None:
        """The live object, or None when it does not exist."""
        path = object_path(obj)
        status, body = self._request("GET", path)
        if status == 404:
            return None
        if status >= 400:
            raise self._fail(status, body, "GET", path, describe(obj))
        return body

    def list(self, api_version: str, kind: str, namespace: str, selector: str = "") -> list[Obj]:
        """Objects of a kind in a namespace, optionally by label selector."""
        path = collection_path(api_version, kind, namespace)
        status, body = self._request(
            "GET", path, query=[("labelSelector", selector)] if selector else None
        )
        if status == 404:
            return []
        if status >= 400:
            raise self._fail(status, body, "GET", path, f"{kind} list")
        return list(body.get("items", []))

    def apply(self, obj: Obj, *, field_manager: str = FIELD_MANAGER) -> Obj:
        """Server-side apply (``force``: mlfn owns the fields it sets). Returns the live object."""
        path = object_path(obj)
        query = [("fieldManager", field_manager), ("force", "true")]
        status, body = self._request(
            "PATCH", path, query=query, body=obj, content_type=APPLY_CONTENT_TYPE
        )
        if status == 404 and (body.get("details") or {}).get("kind") == "namespaces":
            namespace = obj["metadata"].get("namespace")
            raise ClusterError(
                f"{describe(obj)}: namespace {namespace!r} does not exist; create it with "
                f"`kubectl create namespace {namespace}` or pick another with --namespace"
            )
        if status == 404:
            k = kind_of(obj)
            raise NotInstalledError(
                f"{describe(obj)}: the API server does not serve "
                f"{obj['apiVersion']} {k.plural}; install {k.provider}"
            )
        if status >= 400:
            raise self._fail(status, body, "PATCH", path, describe(obj))
        return body

    def delete(self, obj: Obj) -> bool:
        """Delete (foreground); False when it was already gone."""
        path = object_path(obj)
        status, body = self._request("DELETE", path, query=[("propagationPolicy", "Foreground")])
        if status == 404:
            return False
        if status >= 400:
            raise self._fail(status, body, "DELETE", path, describe(obj))
        return True

    def wait_ready(
        self,
        obj: Obj,
        timeout: float,
        *,
        poll: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Readiness:
        """Poll until the object's Ready condition is True.

        Raises:
            NotReadyError: Ready=False (with its reason and message), or the timeout passed.
        """
        deadline = clock() + timeout
        last = Readiness(None)
        while True:
            live = self.get(obj)
            last = Readiness.of(live) if live is not None else Readiness(None, "NotFound")
            if last.ready:
                return last
            # Ready=False can be transient while a revision starts; fail only on a stable False.
            if last.ready is False and last.reason not in (
                "",
                "RevisionMissing",
                "Reconciling",
                "Deploying",
            ):
                raise NotReadyError(
                    f"{describe(obj)} is not ready: {last.reason}: {last.message}",
                    reason=last.reason,
                    detail=last.message,
                )
            if clock() >= deadline:
                state = (
                    f"{last.reason}: {last.message}" if last.reason else "no Ready condition yet"
                )
                raise NotReadyError(
                    f"{describe(obj)} not ready after {timeout:g}s ({state})",
                    reason=last.reason or "Timeout",
                    detail=last.message,
                )
            sleep(min(poll, max(0.0, deadline - clock())))


def _json(raw: Any) -> Obj:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {"message": raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)}
    return data if isinstance(data, dict) else {}


def connect(
    *,
    config_file: str | Path | None = None,
    context: str | None = None,
    request_timeout: float = 15.0,
) -> Cluster:
    """A :class:`Cluster` from a kubeconfig (``KUBECONFIG``, ``~/.kube/config``) or in-cluster.

    Raises:
        NoKubeconfigError: neither is available, or the context does not exist.
    """
    from kubernetes import client, config

    try:
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(config_file) if config_file else None,
            context=context,
            persist_config=False,
        )
    except (config.ConfigException, OSError) as err:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api = client.ApiClient()
        except config.ConfigException:
            raise NoKubeconfigError(
                f"no usable kubeconfig: {err}. Point KUBECONFIG at one or create "
                "~/.kube/config (for example `kind create cluster`, or your provider's "
                "`get-credentials`); set MLFN_KUBE_CONTEXT to pick a context"
            ) from err
    api.configuration.retries = 0
    return Cluster(api, request_timeout=request_timeout)
