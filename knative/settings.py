"""The Knative section of the settings (``MLFN_*``), and the root the Knative back end reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eventing.settings import EventingRoot
from runtime.settings import Section

__all__ = ["ClusterRoot", "KnativeSettings"]


class KnativeSettings(Section):
    """Rendering, building and deploying to a Knative cluster."""

    registry: str = Field(default="registry.local/mlfn", description="image registry")
    kube_context: str | None = Field(default=None, description="kubeconfig context; unset: current")
    kafka_bootstrap_servers: str = Field(
        default="my-cluster-kafka-bootstrap.kafka:9092",
        description="Kafka HOST:PORT as seen from inside the cluster (KafkaSource, broker, sinks)",
    )
    kafka_namespace: str = Field(default="kafka", description="namespace of the in-cluster Kafka")
    kafka_replication_factor: int = Field(default=3, ge=1, description="broker topic replicas")
    ingress_namespace: str = Field(
        default="kourier-system", description="namespace of the Knative ingress gateway"
    )
    deploy_timeout_seconds: float = Field(default=300.0, gt=0, description="wait for Ready")
    database_secret: str = Field(
        default="mlfn-database",
        description=(
            "Secret whose key `url` holds MLFN_DATABASE_URL for functions with a model or a "
            "retrain policy; empty: no shared store (each pod keeps its own, under /tmp)"
        ),
    )
    database_namespace: str = Field(
        default="database", description="namespace of the PostgreSQL pods (egress policy)"
    )
    database_port: int = Field(default=5432, ge=1, le=65535, description="PostgreSQL port")
    artifact_secret: str = Field(
        default="mlfn-artifacts",
        description=(
            "Secret whose keys `access_key_id` and `secret_access_key` hold the object store's "
            "credentials, for functions with a model or a retrain policy when "
            "MLFN_ARTIFACT_URL is set; empty: the pods' own (a workload identity)"
        ),
    )
    metrics_scrape: Literal["annotations", "podmonitor", "none"] = Field(
        default="annotations",
        description="how Prometheus scrapes functions on a cluster: prometheus.io pod "
        "annotations, a PodMonitor (Prometheus Operator), or none",
    )
    monitoring_namespace: str = Field(
        default="monitoring", description="namespace of Prometheus (allowed to scrape functions)"
    )
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring:9090",
        description="Prometheus as Flagger reaches it (the canaries' MetricTemplates)",
    )


class ClusterRoot(EventingRoot):
    """The eventing root plus ``knative``."""

    knative: KnativeSettings = Field(default_factory=KnativeSettings)
