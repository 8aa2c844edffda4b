"""Traffic moves by hand on Knative (``mlfn rollout --cluster``), and the model-version pin.

Automatic canaries on a cluster are Flagger's (:mod:`knative.manifests.flagger`); these
are the manual moves, for functions without a ``Canary``:
``percent``: the latest ready revision gets P% (tag ``candidate``), the previous one the
rest (tag ``current``). ``promote``: the latest gets 100% (tag ``current``).
``rollback``: the previous gets 100% (tag ``current``). :class:`KnativeTarget` offers
them as a :class:`~localplatform.canary.RolloutTarget`-shaped object.

:func:`pin_model_version` is the step that starts a canary of a new model version:
it sets ``MLFN_MODEL_VERSION`` in the Service's revision template, so Knative creates a
revision pinned to that version and Flagger analyses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from knative.cluster import Cluster
from knative.errors import ClusterError
from knative.manifests.common import KSVC_API, Obj
from runtime.function import MODEL_PUBLISHED

__all__ = [
    "MODEL_VERSION_ENV",
    "Action",
    "KnativeTarget",
    "RolloutResult",
    "pin_model_version",
    "pinned_template",
    "rollout",
    "traffic_block",
    "version_from_event",
]

Action = Literal["percent", "promote", "rollback"]
ROLLOUT_MANAGER = "mlfn-rollout"
"""Its own field manager: deploy (manager ``mlfn``) never fights over ``spec.traffic``."""


def traffic_block(action: Action, latest: str, previous: str | None, percent: int = 0) -> list[Obj]:
    """The Service's ``spec.traffic`` for ``action``.

    Example:
        >>> traffic_block("percent", "fn-00002", "fn-00001", 20)[0]
        {'revisionName': 'fn-00002', 'percent': 20, 'tag': 'candidate'}
    """
    if action == "promote":
        return [{"revisionName": latest, "percent": 100, "tag": "current"}]
    if previous is None:
        raise ClusterError(
            f"revision {latest} has no previous ready revision to split with or "
            "roll back to; deploy a new revision first"
        )
    if action == "rollback":
        return [{"revisionName": previous, "percent": 100, "tag": "current"}]
    if not 0 < percent < 100:
        raise ClusterError(f"--percent must be between 1 and 99, got {percent}")
    return [
        {"revisionName": latest, "percent": percent, "tag": "candidate"},
        {"revisionName": previous, "percent": 100 - percent, "tag": "current"},
    ]


@dataclass(frozen=True)
class RolloutResult:
    """The traffic the Service was given."""

    service: str
    traffic: list[Obj]

    def text(self) -> str:
        split = ", ".join(f"{t['revisionName']}={t['percent']}% ({t['tag']})" for t in self.traffic)
        return f"{self.service}: {split}"


def _generation(rev: Obj) -> int:
    value = (
        rev.get("metadata", {})
        .get("labels", {})
        .get("serving.knative.dev/configurationGeneration", "0")
    )
    return int(value) if str(value).isdigit() else 0


def _previous(ksvc: Obj, revisions: list[Obj], latest: str) -> str | None:
    for t in (ksvc.get("status") or {}).get("traffic") or []:
        if t.get("tag") == "current" and t.get("revisionName") not in (None, latest):
            return str(t["revisionName"])
    by_name = {r["metadata"]["name"]: r for r in revisions}
    latest_gen = _generation(by_name[latest]) if latest in by_name else 1 << 30
    older = [
        r
        for r in revisions
        if _generation(r) < latest_gen
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (r.get("status") or {}).get("conditions") or []
        )
    ]
    return max(older, key=_generation)["metadata"]["name"] if older else None


def rollout(
    cluster: Cluster, name: str, namespace: str, action: Action, percent: int = 0
) -> RolloutResult:
    """Shift ``name``'s traffic (see the module docstring) with server-side apply.

    Raises:
        ClusterError: no such Service, no ready revision, or nothing to roll back to.
    """
    ref: Obj = {
        "apiVersion": KSVC_API,
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
    }
    ksvc = cluster.get(ref)
    if ksvc is None:
        raise ClusterError(
            f"no Knative Service {name!r} in namespace {namespace!r}; "
            f"deploy it first with `mlfn deploy --function {name}`"
        )
    latest = (ksvc.get("status") or {}).get("latestReadyRevisionName")
    if not latest:
        raise ClusterError(f"Service {name} has no ready revision yet; see `mlfn status --cluster`")
    revisions = cluster.list(
        "serving.knative.dev/v1", "Revision", namespace, f"serving.knative.dev/service={name}"
    )
    traffic = traffic_block(action, latest, _previous(ksvc, revisions, latest), percent)
    cluster.apply({**ref, "spec": {"traffic": traffic}}, field_manager=ROLLOUT_MANAGER)
    return RolloutResult(name, traffic)


class KnativeTarget:
    """Promote / roll back a Knative Service's traffic block (:func:`rollout`)."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def set_weight(self, function: str, percent: int) -> None:
        rollout(self.cluster, function, self.namespace, "percent", percent)

    def promote(self, function: str) -> None:
        rollout(self.cluster, function, self.namespace, "promote")

    def rollback(self, function: str) -> None:
        rollout(self.cluster, function, self.namespace, "rollback")


MODEL_VERSION_ENV = "MLFN_MODEL_VERSION"
"""The setting that pins a server to one model version (a revision per version)."""


def pinned_template(template: Obj, version: int) -> Obj:
    """``template`` (a Service's ``spec.template``) with the container pinned to ``version``.

    Example:
        >>> t = {"spec": {"containers": [{"name": "function", "env": [{"name": "A", "value": "1"}]}]}}
        >>> pinned_template(t, 7)["spec"]["containers"][0]["env"][-1]
        {'name': 'MLFN_MODEL_VERSION', 'value': '7'}
    """
    spec = dict(template.get("spec") or {})
    containers = [dict(c) for c in spec.get("containers") or []]
    if len(containers) != 1:
        raise ClusterError(
            f"the Service's template has {len(containers)} containers; mlfn renders exactly one"
        )
    env = [e for e in containers[0].get("env") or [] if e.get("name") != MODEL_VERSION_ENV]
    env.append({"name": MODEL_VERSION_ENV, "value": str(version)})
    containers[0]["env"] = env
    return {**template, "spec": {**spec, "containers": containers}}


def pin_model_version(cluster: Cluster, name: str, namespace: str, version: int) -> Obj:
    """Pin Service ``name``'s revision template to model ``version`` (a new revision).

    The rest of the live template is kept as it is; Flagger sees the new revision and
    starts its analysis. Idempotent: pinning the version already pinned changes nothing.

    Raises:
        ClusterError: no such Service.
    """
    ref: Obj = {
        "apiVersion": KSVC_API,
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
    }
    ksvc = cluster.get(ref)
    if ksvc is None:
        raise ClusterError(
            f"no Knative Service {name!r} in namespace {namespace!r}; "
            f"deploy it first with `mlfn deploy --function {name}`"
        )
    template = pinned_template(ksvc["spec"]["template"], version)
    meta = ksvc.get("metadata") or {}
    body: Obj = {
        **ref,
        "metadata": {
            **ref["metadata"],
            **{k: meta[k] for k in ("labels", "annotations") if meta.get(k)},
        },
        "spec": {"template": template},
    }
    return cluster.apply(body)


def version_from_event(path: Path) -> int:
    """The model version of a structured ``mlfn.model.published`` CloudEvent in ``path``.

    Raises:
        ClusterError: the file cannot be read, is not such an event, or names no version.
    """
    try:
        event = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ClusterError(f"cannot read the published event in {path}: {err}") from err
    if not isinstance(event, dict):
        event = {}
    data = event.get("data")
    version = data.get("version") if isinstance(data, dict) else None
    if event.get("type") != MODEL_PUBLISHED or not isinstance(version, int) or version < 1:
        raise ClusterError(
            f"{path} is not an {MODEL_PUBLISHED} event with a data.version of 1 or more "
            f"(type {event.get('type')!r}, version {version!r}); nothing to pin"
        )
    return version
