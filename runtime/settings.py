"""Settings, read once at the entry point from ``MLFN_*`` environment variables.

Library code receives a :class:`Settings` object; it never reads ``os.environ``.
Each package owns a section below; add fields to your own section only.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """All of mlfn's settings. Every field is ``MLFN_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="MLFN_", extra="ignore", frozen=True)

    # --- common ------------------------------------------------------------------
    functions_package: str = Field(
        default="functions", description="Python package whose modules hold the functions"
    )
    home: Path = Field(default=Path(".mlfn"), description="local state: model and dataset stores")
    namespace: str = Field(default="default", description="Knative namespace (and local one)")
    log_level: str = "INFO"
    log_format: str = Field(default="json", description="json or text")

    # --- runtime (server) ---------------------------------------------------------
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    drain_seconds: float = Field(default=20.0, ge=0, description="SIGTERM grace period")
    queue_depth: int = Field(
        default=256, ge=0, description="requests that may wait beyond containerConcurrency"
    )
    queue_timeout_seconds: float = Field(default=10.0, gt=0)
    max_json_depth: int = Field(
        default=64,
        ge=1,
        le=200,  # pydantic's JSON parser stops at about 200 levels with an error of its own
        description="deepest nesting of arrays and objects a request body may have (else 400)",
    )
    threads: int = Field(
        default=128,
        ge=1,
        description="server threads of event and plain functions (inference ones run gevent)",
    )
    batching: bool = Field(
        default=True, description="honour spec.batching; false: one call per request"
    )
    ready_timeout_seconds: float = Field(
        default=120.0, gt=0, description="how long `mlfn invoke` waits for the model to load"
    )

    # --- models -----------------------------------------------------------------
    model_store: Path | None = Field(default=None, description="default: HOME/models")
    dataset_store: Path | None = Field(default=None, description="default: HOME/datasets")
    model_bootstrap: bool = Field(
        default=True,
        description="train a model's bootstrap version when the store has none (off in production)",
    )
    model_version: int | None = Field(
        default=None,
        ge=1,
        description="serve exactly this version and do not follow `latest` (a pinned revision)",
    )

    # --- eventing ---------------------------------------------------------------
    bootstrap_servers: str | None = Field(
        default=None, description="external Kafka HOST:PORT; unset: the embedded broker"
    )
    partitions: int = Field(default=4, ge=1, description="partitions of topics mlfn creates")
    max_record_bytes: int = Field(
        default=1024 * 1024, ge=1, description="larger record values are dead-lettered"
    )
    max_in_flight: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="unordered delivery: requests in flight per partition",
    )
    dispatch_workers: int = Field(default=64, ge=1, description="delivery threads per dispatcher")
    session_timeout_ms: int = Field(
        default=6000, ge=1000, description="consumer-group session timeout (joins take ~half)"
    )

    # --- knative ----------------------------------------------------------------
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

    # --- local platform ---------------------------------------------------------
    domain: str = Field(default="example.com", description="host suffix <fn>.<ns>.<domain>")
    platform_host: str = Field(default="127.0.0.1", description="address the gateway binds")
    platform_port: int = Field(default=8080, ge=0, le=65535, description="gateway port; 0: free")
    platform_server: str = Field(
        default="runtime.server:run",
        description="module:callable(function, settings, port, host) each instance runs",
    )
    platform_preload: str = Field(
        default="flask,numpy,sklearn,skops.io,gevent,gunicorn.workers.ggevent",
        description="modules the zygote imports before forking instances (comma-separated)",
    )
    platform_eventing: bool = Field(default=True, description="start broker + eventing plane")
    platform_stable_window_seconds: float = Field(
        default=6.0, ge=1, description="local stable window, unless a function sets its own"
    )
    platform_scale_to_zero_grace_seconds: float = Field(default=2.0, ge=0)
    platform_tick_seconds: float = Field(default=0.5, gt=0, description="autoscaler period")
    platform_max_scale_up_rate: float = Field(default=1000.0, gt=1)
    platform_max_scale_down_rate: float = Field(default=2.0, gt=1)
    platform_max_instances: int = Field(
        default=8, ge=1, description="cap per revision when a function's max_scale is 0"
    )
    platform_watch_seconds: float = Field(
        default=1.0, ge=0, description="poll period for source changes (new revisions); 0: off"
    )
    platform_drain_seconds: float = Field(default=10.0, ge=0, description="shutdown grace")

    # --- ml loop ----------------------------------------------------------------
    loop_broker_url: str | None = Field(
        default=None,
        description="broker ingress URL for model.published/rejected (cluster); unset: Kafka",
    )
    loop_keep_rejected: bool = Field(
        default=True, description="store rejected candidates (never made latest) for the record"
    )
    loop_canary_tick_seconds: float = Field(
        default=1.0, gt=0, description="how often the local canary controller reads metrics"
    )

    @property
    def model_store_path(self) -> Path:
        return self.model_store or self.home / "models"

    @property
    def dataset_store_path(self) -> Path:
        return self.dataset_store or self.home / "datasets"
