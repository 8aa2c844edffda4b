"""The Knative section of the settings (``MLFN_*``), and the root the Knative back end reads."""

from __future__ import annotations

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


class ClusterRoot(EventingRoot):
    """The eventing root plus ``knative``."""

    knative: KnativeSettings = Field(default_factory=KnativeSettings)
