"""Deploy and undeploy: apply rendered objects in order, wait for Ready, report per object.

:func:`apply_order` puts what others reference first (config and identity, then sinks
and brokers, workloads, Flagger's templates and canaries, and last what delivers events:
triggers and sources); undeploy deletes in the reverse order. A canary Service keeps the
model version its revision template was pinned to (:func:`knative.rollout.pin_model_version`)
across deploys. Functions here return status objects; progress lines go to a callback the
CLI prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from knative.cluster import Cluster, Readiness, kind_of
from knative.errors import MissingSecretError
from knative.manifests.common import KNATIVE_NAMESPACES, Obj

__all__ = [
    "APPLY_RANK",
    "ObjectStatus",
    "apply_all",
    "apply_order",
    "check_secrets",
    "delete_all",
    "keep_pin",
    "secret_refs",
    "service_status",
]

APPLY_RANK: dict[str, int] = {
    "ConfigMap": 0,
    "ServiceAccount": 1,
    "Role": 2,
    "RoleBinding": 3,
    "NetworkPolicy": 4,
    "PodMonitor": 5,
    "KafkaSink": 6,
    "Broker": 7,
    "Service": 8,
    "JobSink": 8,
    "MetricTemplate": 9,
    "Canary": 10,
    "Trigger": 11,
    "KafkaSource": 12,
    "PingSource": 12,
}
"""Apply rank by kind: an object comes after every kind it may reference (a Canary after
its Service and MetricTemplates, a Trigger after its broker and subscriber, a KafkaSource
after the broker it sinks to, a PingSource after the function it wakes)."""


def apply_order(objects: Sequence[Obj]) -> list[Obj]:
    """``objects`` sorted by :data:`APPLY_RANK`, keeping the rendered order within a rank."""
    return sorted(objects, key=lambda o: APPLY_RANK.get(o["kind"], len(APPLY_RANK)))


def keep_pin(obj: Obj, live: Obj | None) -> Obj:
    """``obj`` (a rendered Knative Service) with the live model-version pin, if it has one."""
    from knative.rollout import MODEL_VERSION_ENV, pinned_template

    if live is None or obj["kind"] != "Service" or not obj["apiVersion"].startswith("serving."):
        return obj
    try:
        env = live["spec"]["template"]["spec"]["containers"][0].get("env") or []
    except (KeyError, IndexError, TypeError):
        return obj
    pins = [e.get("value") for e in env if e.get("name") == MODEL_VERSION_ENV]
    rendered = obj["spec"]["template"]["spec"]["containers"][0].get("env") or []
    if (
        not pins
        or not str(pins[0]).isdigit()
        or any(e.get("name") == MODEL_VERSION_ENV for e in rendered)
    ):
        return obj
    template = pinned_template(obj["spec"]["template"], int(pins[0]))
    return {**obj, "spec": {**obj["spec"], "template": template}}


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class ObjectStatus:
    """What happened to one object. ``action``: created, configured, unchanged, deleted, absent."""

    kind: str
    name: str
    action: str
    ready: bool | None = None
    reason: str = ""
    message: str = ""
    url: str | None = None

    def line(self) -> str:
        state = {True: "Ready", False: f"NotReady ({self.reason}: {self.message})", None: ""}[
            self.ready
        ]
        url = f"  {self.url}" if self.url else ""
        return f"{self.kind}/{self.name} {self.action} {state}{url}".rstrip()


def _version(obj: Obj | None) -> str | None:
    return None if obj is None else obj.get("metadata", {}).get("resourceVersion")


def secret_refs(objects: Sequence[Obj]) -> dict[tuple[str, str], list[str]]:
    """``(namespace, secret) -> [functions]`` for every ``secretKeyRef`` in a pod template."""
    out: dict[tuple[str, str], list[str]] = {}
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers") or []:
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    key = (obj["metadata"].get("namespace", "default"), ref["name"])
                    out.setdefault(key, []).append(obj["metadata"]["name"])
    return out


def _secret_keys(objects: Sequence[Obj], secret: str) -> list[str]:
    """The keys of ``secret`` that the pod templates read, in order."""
    keys: list[str] = []
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers") or []:
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] == secret and ref["key"] not in keys:
                    keys.append(ref["key"])
    return keys


def check_secrets(cluster: Cluster, objects: Sequence[Obj]) -> None:
    """Fail before applying anything when a Secret the functions read does not exist.

    Raises:
        MissingSecretError: naming the Secret, who reads it and how to create it.
    """
    missing = []
    for (namespace, name), users in sorted(secret_refs(objects).items()):
        probe = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
        }
        if cluster.get(probe) is None:
            keys = _secret_keys(objects, name)
            if "url" in keys:
                literals = "--from-literal=url='postgresql://USER:PASSWORD@HOST:5432/DB'"
                without = "MLFN_DATABASE_SECRET=''"
            else:
                literals = " ".join(f"--from-literal={k}=..." for k in keys)
                without = "MLFN_ARTIFACT_SECRET='' (the pods' own identity)"
            missing.append(
                f"Secret {name!r} in namespace {namespace!r} (read by {', '.join(sorted(set(users)))}) "
                f"does not exist; create it with: kubectl -n {namespace} create secret generic "
                f"{name} {literals} (see docs/stores.md), or render without it: {without}"
            )
    if missing:
        raise MissingSecretError("\n".join(missing))


def apply_all(
    cluster: Cluster,
    objects: Sequence[Obj],
    *,
    timeout: float,
    progress: Progress = _quiet,
    poll: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> list[ObjectStatus]:
    """Apply ``objects`` in dependency order, then wait for each one with a Ready condition.

    Idempotent: applying the same objects again reports them ``unchanged``.

    Raises:
        NotInstalledError: a kind is not served (checked before anything is applied).
        MissingSecretError: a Secret the functions read is absent (checked before too).
        NotReadyError: an object reported Ready=False or stayed unready past ``timeout``.
    """
    cluster.check_installed(objects)
    check_secrets(cluster, objects)
    applied: list[tuple[Obj, str]] = []
    for obj in apply_order(objects):
        before = cluster.get(obj)
        live = cluster.apply(keep_pin(obj, before))
        action = (
            "created"
            if before is None
            else "unchanged"
            if _version(before) == _version(live)
            else "configured"
        )
        applied.append((obj, action))
        progress(f"{obj['kind']}/{obj['metadata']['name']} {action}")
    deadline = clock() + timeout
    out = []
    for obj, action in applied:
        if not kind_of(obj).has_ready:
            out.append(ObjectStatus(obj["kind"], obj["metadata"]["name"], action))
            continue
        progress(f"waiting for {obj['kind']}/{obj['metadata']['name']} to become Ready")
        r: Readiness = cluster.wait_ready(obj, max(0.0, deadline - clock()), poll=poll, clock=clock)
        status = ObjectStatus(
            obj["kind"], obj["metadata"]["name"], action, r.ready, r.reason, r.message, r.url
        )
        progress(status.line())
        out.append(status)
    return out


def delete_all(
    cluster: Cluster, objects: Sequence[Obj], *, progress: Progress = _quiet
) -> list[ObjectStatus]:
    """Delete ``objects`` in reverse apply order; Knative's own config is never deleted."""
    out = []
    for obj in reversed(apply_order(objects)):
        if obj["metadata"].get("namespace") in KNATIVE_NAMESPACES:
            continue
        gone = cluster.delete(obj)
        status = ObjectStatus(obj["kind"], obj["metadata"]["name"], "deleted" if gone else "absent")
        progress(status.line())
        out.append(status)
    return out


def service_status(cluster: Cluster, namespace: str) -> list[Obj]:
    """mlfn's Knative Services, KafkaSources, Triggers and Brokers in ``namespace``."""
    selector = "app.kubernetes.io/managed-by=mlfn"
    out: list[Obj] = []
    for api_version, kind in (
        ("serving.knative.dev/v1", "Service"),
        ("sources.knative.dev/v1beta1", "KafkaSource"),
        ("eventing.knative.dev/v1", "Trigger"),
        ("eventing.knative.dev/v1", "Broker"),
    ):
        for item in cluster.list(api_version, kind, namespace, selector):
            item.setdefault("kind", kind)
            out.append(item)
    return out


def status_lines(objects: Sequence[Obj]) -> list[str]:
    """One line per object: kind/name, Ready state, URL, traffic split for Services."""
    lines = []
    for obj in objects:
        r = Readiness.of(obj)
        state = "Ready" if r.ready else f"NotReady {r.reason}: {r.message}".rstrip(": ")
        line = f"{obj['kind']}/{obj['metadata']['name']:<24} {state}"
        if r.url:
            line += f"  {r.url}"
        traffic = (obj.get("status") or {}).get("traffic") or []
        if obj["kind"] == "Service" and traffic:
            split = ", ".join(
                f"{t.get('revisionName', '?')}={t.get('percent', 0)}%"
                + (f" ({t['tag']})" if t.get("tag") else "")
                for t in traffic
            )
            line += f"  traffic: {split}"
        lines.append(line)
    return lines


__all__ += ["status_lines"]
