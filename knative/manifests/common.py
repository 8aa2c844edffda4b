"""What every builder shares: render options, names, labels and object references."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from eventing.naming import dns_name
from eventing.settings import EventingSettings
from knative.settings import KnativeSettings
from runtime.settings import CommonSettings, default_of
from runtime.spec import Delivery, FunctionSpec, format_iso_duration

__all__ = [
    "ARTIFACT_SECRET_KEYS",
    "CONTAINER_PORT",
    "DATABASE_URL_KEY",
    "JOBSINK_API",
    "JOB_EVENT_DIR",
    "KAFKA_SINK_API",
    "KNATIVE_NAMESPACES",
    "KSVC_API",
    "Obj",
    "RenderOptions",
    "ScrapeMode",
    "delivery_spec",
    "dns_name",
    "is_topic",
    "jobsink_name",
    "kafka_sink_name",
    "labels",
    "metadata",
    "subscriber_ref",
    "uses_stores",
]

Obj = dict[str, Any]
"""A rendered Kubernetes object: plain JSON-able dicts, lists, strings and numbers."""

KSVC_API = "serving.knative.dev/v1"
KAFKA_SINK_API = "eventing.knative.dev/v1alpha1"
JOBSINK_API = "sinks.knative.dev/v1alpha1"
CONTAINER_PORT = 8080
KNATIVE_NAMESPACES = ("knative-serving", "knative-eventing")
"""Knative's own namespaces: mlfn patches config there and never deletes anything."""
JOB_EVENT_DIR = "/etc/jobsink-event"
"""Where Knative's JobSink mounts the event that started the job."""

ScrapeMode = Literal["annotations", "podmonitor", "none"]
"""How Prometheus finds the functions' ``/metrics``: ``prometheus.io/*`` pod annotations,
a ``PodMonitor`` (Prometheus Operator), or not at all."""


@dataclass(frozen=True)
class RenderOptions:
    """Everything besides the specs that the rendered objects depend on.

    Attributes:
        namespace: namespace of every namespaced object.
        images: image reference per image variant (``cpu``, ``cuda``).
        bootstrap_servers: Kafka ``HOST:PORT`` as seen from inside the cluster.
        kafka_namespace: namespace of the Kafka pods (egress policy).
        ingress_namespace: namespace of the Knative ingress gateway (ingress policy).
        partitions: partitions of the broker topic.
        replication_factor: replicas of the broker topic.
        env: ``MLFN_*`` settings passed to every container.
        database_secret: Secret whose key ``url`` holds ``MLFN_DATABASE_URL`` for the
            functions that use the stores (empty: none; each pod keeps its own under /tmp).
        database_namespace: namespace of the PostgreSQL pods (egress policy).
        database_port: PostgreSQL's port (egress policy).
        artifact_url: ``MLFN_ARTIFACT_URL`` (``s3://BUCKET/PREFIX``) for the functions that
            use the stores (empty: the files stay in the database).
        artifact_endpoint_url: ``MLFN_ARTIFACT_ENDPOINT_URL`` (an S3-compatible server).
        artifact_secret: Secret with the object store's credentials (keys
            ``access_key_id``, ``secret_access_key``); empty: the pods' own identity.
        metrics_scrape: how Prometheus scrapes the functions (see :data:`ScrapeMode`).
        monitoring_namespace: namespace of Prometheus (ingress policy for its scrapes).
        prometheus_url: where Flagger's MetricTemplates query Prometheus.
    """

    namespace: str = default_of(CommonSettings, "namespace")
    images: Mapping[str, str] = field(
        default_factory=lambda: {
            "cpu": "registry.local/mlfn/mlfn:latest",
            "cuda": "registry.local/mlfn/mlfn-cuda:latest",
        }
    )
    bootstrap_servers: str = default_of(KnativeSettings, "kafka_bootstrap_servers")
    kafka_namespace: str = default_of(KnativeSettings, "kafka_namespace")
    ingress_namespace: str = default_of(KnativeSettings, "ingress_namespace")
    partitions: int = default_of(EventingSettings, "partitions")
    replication_factor: int = default_of(KnativeSettings, "kafka_replication_factor")
    env: Mapping[str, str] = field(default_factory=dict)
    database_secret: str = ""  # the pure builders default to no shared store; see options_from
    database_namespace: str = default_of(KnativeSettings, "database_namespace")
    database_port: int = default_of(KnativeSettings, "database_port")
    artifact_url: str = ""
    artifact_endpoint_url: str = ""
    artifact_secret: str = ""
    metrics_scrape: ScrapeMode = default_of(KnativeSettings, "metrics_scrape")  # noqa: RUF009 (a str)
    monitoring_namespace: str = default_of(KnativeSettings, "monitoring_namespace")
    prometheus_url: str = default_of(KnativeSettings, "prometheus_url")

    def image_for(self, spec: FunctionSpec) -> str:
        """The image that runs ``spec``: the CUDA variant for GPU functions."""
        return self.images["cuda" if spec.is_gpu else "cpu"]


DATABASE_URL_KEY = "url"
"""The key of the database Secret that holds the URL."""

ARTIFACT_SECRET_KEYS = {
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
}
"""Variable -> key of the object store's Secret (boto3 reads the standard variables)."""


def uses_stores(spec: FunctionSpec) -> bool:
    """Whether ``spec`` reads or writes the shared stores (a model, or a retrain policy)."""
    return spec.model is not None or spec.retrain is not None


def labels(function: str | None = None) -> dict[str, str]:
    """Labels on every object mlfn renders; ``mlfn.dev/function`` when it belongs to one."""
    out = {"app.kubernetes.io/part-of": "mlfn", "app.kubernetes.io/managed-by": "mlfn"}
    if function:
        out["app.kubernetes.io/name"] = function
        out["mlfn.dev/function"] = function
    return out


def metadata(name: str, namespace: str, function: str | None = None, **extra: Any) -> Obj:
    """Object metadata with mlfn's labels."""
    meta: Obj = {"name": name, "namespace": namespace, "labels": labels(function)}
    meta.update({k: v for k, v in extra.items() if v})
    return meta


def subscriber_ref(spec: FunctionSpec, namespace: str) -> Obj:
    """Where events for ``spec`` go: its Knative Service, or its JobSink when ``spec.job``."""
    if spec.job:
        return {
            "apiVersion": JOBSINK_API,
            "kind": "JobSink",
            "name": jobsink_name(spec),
            "namespace": namespace,
        }
    return {"apiVersion": KSVC_API, "kind": "Service", "name": spec.name, "namespace": namespace}


def jobsink_name(spec: FunctionSpec) -> str:
    return dns_name(spec.name, "job")


def kafka_sink_name(topic: str) -> str:
    return dns_name("topic", topic)


def is_topic(dead_letter_sink: str) -> bool:
    """A dead-letter sink is a URL (``http(s)://``) or else a Kafka topic name."""
    return not dead_letter_sink.startswith(("http://", "https://"))


def delivery_spec(delivery: Delivery, namespace: str, *, timeout: bool = True) -> Obj:
    """Knative's delivery spec (retry, backoff, per-attempt timeout, dead-letter sink)."""
    out: Obj = {
        "retry": delivery.retry,
        "backoffPolicy": delivery.backoff_policy,
        "backoffDelay": format_iso_duration(delivery.backoff_delay),
    }
    if timeout and delivery.timeout is not None:
        out["timeout"] = format_iso_duration(delivery.timeout)
    sink = delivery.dead_letter_sink
    if sink:
        if is_topic(sink):
            out["deadLetterSink"] = {
                "ref": {
                    "apiVersion": KAFKA_SINK_API,
                    "kind": "KafkaSink",
                    "name": kafka_sink_name(sink),
                    "namespace": namespace,
                }
            }
        else:
            out["deadLetterSink"] = {"uri": sink}
    return out
