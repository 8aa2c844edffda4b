"""The function spec: the single source of truth for a function's deployment.

Decorators in :mod:`runtime.function` record a :class:`FunctionSpec`; the local platform
(`localplatform`), the event dispatchers (`eventing`) and the manifest renderer
(`knative`) all read it. Nothing here does I/O.

Durations accept ISO-8601 (``"PT0.2S"``, Knative's delivery format), plain seconds
(``0.2``) or ``timedelta`` values.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Batching",
    "Delivery",
    "EventBatch",
    "FunctionKind",
    "FunctionSpec",
    "KafkaSource",
    "ModelRef",
    "Resources",
    "RetrainPolicy",
    "Rollout",
    "Scaling",
    "Subscription",
    "Toleration",
    "format_go_duration",
    "format_iso_duration",
]

FunctionKind = Literal["inference", "event", "http", "cloudevent"]
"""``inference``/``event``: mlfn decorators; ``http``/``cloudevent``: plain functions-framework."""

_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def format_iso_duration(d: timedelta) -> str:
    """Format a duration as ISO-8601, as Knative's delivery spec wants (``PT0.2S``)."""
    seconds = d.total_seconds()
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


def format_go_duration(d: timedelta) -> str:
    """Format a duration as Go does in Knative annotations (``60s``, ``1.5s``)."""
    seconds = d.total_seconds()
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


class Scaling(_Frozen):
    """Knative autoscaling knobs (``autoscaling.knative.dev/*`` annotations).

    ``target`` is the soft per-instance target (concurrency, or requests/s with
    ``metric="rps"``); ``container_concurrency`` is the hard limit (0: unlimited).
    """

    autoscaler_class: Literal["kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"] = (
        "kpa.autoscaling.knative.dev"
    )
    metric: Literal["concurrency", "rps"] = "concurrency"
    target: float = Field(default=10.0, gt=0)
    target_utilization_percentage: float = Field(default=70.0, gt=0, le=100)
    container_concurrency: int = Field(default=0, ge=0, le=1000)
    min_scale: int = Field(default=0, ge=0)
    max_scale: int = Field(default=0, ge=0, description="0: unlimited")
    initial_scale: int = Field(default=1, ge=0)
    scale_down_delay: timedelta = timedelta(0)
    stable_window: timedelta = timedelta(seconds=60)
    panic_window_percentage: float = Field(default=10.0, ge=1, le=100)
    panic_threshold_percentage: float = Field(default=200.0, ge=110, le=1000)
    scale_to_zero_retention: timedelta = timedelta(0)

    @model_validator(mode="after")
    def _check_bounds(self) -> Scaling:
        if self.max_scale and self.min_scale > self.max_scale:
            raise ValueError(
                f"min_scale ({self.min_scale}) is above max_scale ({self.max_scale}); "
                "lower min_scale or raise max_scale (0 means unlimited)"
            )
        if not timedelta(seconds=6) <= self.stable_window <= timedelta(hours=1):
            raise ValueError("stable_window must be between 6s and 1h, as in Knative")
        return self


class Toleration(_Frozen):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class Resources(_Frozen):
    """Requests and limits. ``gpus > 0`` makes a GPU function (``nvidia.com/gpu``)."""

    cpu: str = "250m"
    memory: str = "512Mi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpus: int = Field(default=0, ge=0)
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


class Batching(_Frozen):
    """Dynamic batching: concurrent requests coalesce into one model call."""

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)


class Delivery(_Frozen):
    """Knative's delivery spec: retries, backoff, per-attempt timeout, dead letter.

    ``dead_letter_sink`` is an ``http(s)://`` URL or a Kafka topic name.
    """

    retry: int = Field(default=3, ge=0, le=1000)
    backoff_policy: Literal["linear", "exponential"] = "exponential"
    backoff_delay: timedelta = timedelta(milliseconds=200)
    timeout: timedelta | None = timedelta(seconds=30)
    dead_letter_sink: str | None = None

    def backoff(self, attempt: int) -> timedelta:
        """Delay before retry number ``attempt`` (1-based), as Knative computes it."""
        if self.backoff_policy == "linear":
            return self.backoff_delay * attempt
        factor: int = 2 ** (attempt - 1)
        return self.backoff_delay * factor


class EventBatch(_Frozen):
    """Batch delivery (``application/cloudevents-batch+json``): up to N events or T ms."""

    max_events: int = Field(default=100, ge=1, le=10_000)
    max_wait_ms: float = Field(default=50.0, ge=0)


class KafkaSource(_Frozen):
    """A KafkaSource: records on ``topics`` become CloudEvents POSTed to the function."""

    name: str | None = None
    topics: tuple[str, ...] = Field(min_length=1)
    consumer_group: str | None = None
    initial_offset: Literal["earliest", "latest"] = "earliest"
    ordering: Literal["ordered", "unordered"] = "ordered"
    delivery: Delivery = Delivery()
    batch: EventBatch | None = None
    key_type: Literal["string", "int", "float", "byte-array"] = Field(
        default="string",
        description="how record keys become the `key` extension (Knative's "
        "kafkasources.sources.knative.dev/key-type): UTF-8 string, 4/8-byte big-endian int "
        "or float, or byte-array (base64); a key that does not decode is dead-lettered",
    )


class Subscription(_Frozen):
    """A Trigger on a broker, with filters in Knative's dialect.

    ``filters`` is Knative's ``spec.filters`` list (``exact``, ``prefix``, ``suffix``,
    ``all``, ``any``, ``not``); ``attributes`` is the legacy ``spec.filter.attributes``.
    """

    name: str | None = None
    broker: str = "default"
    filters: tuple[dict[str, Any], ...] = ()
    attributes: dict[str, str] = Field(default_factory=dict)
    delivery: Delivery = Delivery()
    batch: EventBatch | None = None


class ModelRef(_Frozen):
    """The model an inference function serves, by name in the model store."""

    name: str
    backend: Literal["sklearn", "torch"] = "sklearn"
    poll_seconds: float = Field(default=2.0, gt=0)


class RetrainPolicy(_Frozen):
    """When to retrain: after ``every_rows`` new rows, or ``every_seconds`` with ``min_rows``."""

    model: str
    every_rows: int | None = Field(default=None, ge=1)
    every_seconds: float | None = Field(default=None, gt=0)
    min_rows: int = Field(default=1, ge=1)
    debounce_seconds: float = Field(default=0.5, ge=0)
    tolerance: float = Field(default=0.01, ge=0, le=1)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)


class Rollout(_Frozen):
    """How a new model version reaches traffic: hot swap, or a canary with auto-promotion."""

    strategy: Literal["replace", "canary"] = "replace"
    percent: int = Field(default=20, ge=1, le=99)
    window_seconds: float = Field(default=30.0, gt=0)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_latency_ratio: float = Field(default=1.5, ge=1)
    min_requests: int = Field(default=20, ge=0)


class FunctionSpec(_Frozen):
    """Everything the platforms need to know about one function."""

    name: str
    kind: FunctionKind
    module: str
    entrypoint: str
    description: str = ""
    timeout_seconds: int = Field(default=300, ge=1, le=3600)
    scaling: Scaling = Scaling()
    resources: Resources = Resources()
    batching: Batching | None = None
    model: ModelRef | None = None
    sources: tuple[KafkaSource, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()
    reply_to_broker: str | None = Field(
        default="default", description="broker that reply events go to; None drops replies"
    )
    emits: tuple[str, ...] = Field(default=(), description="CloudEvent types it may reply with")
    job: bool = Field(
        default=False, description="run as a JobSink job, outliving the request timeout"
    )
    retrain: RetrainPolicy | None = None
    rollout: Rollout = Rollout()
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if not _NAME.match(v) or len(v) > 63:
            raise ValueError(
                f"function name {v!r} must be a DNS label (lowercase letters, digits and '-', "
                "starting with a letter, at most 63 characters): it becomes a Knative Service name"
            )
        return v

    @property
    def is_gpu(self) -> bool:
        return self.resources.gpus > 0

    @property
    def is_event(self) -> bool:
        return self.kind in ("event", "cloudevent")
