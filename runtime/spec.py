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
    # a docstring under a field is its description (docs/spec.md is generated from them)
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


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
    """Knative's KPA (concurrency, rps) or the HPA (cpu, memory)"""
    metric: Literal["concurrency", "rps"] = "concurrency"
    """what the autoscaler measures"""
    target: float = Field(default=10.0, gt=0)
    """soft per-instance target of the metric"""
    target_utilization_percentage: float = Field(default=70.0, gt=0, le=100)
    """share of the target an instance should carry before another starts"""
    container_concurrency: int = Field(default=0, ge=0, le=1000)
    """hard limit of requests in flight per instance (0: unlimited)"""
    min_scale: int = Field(default=0, ge=0)
    """instances kept while the revision has traffic (0: scale to zero)"""
    max_scale: int = Field(default=0, ge=0, description="instances at most (0: unlimited)")
    initial_scale: int = Field(default=1, ge=0)
    """instances a new revision starts with"""
    scale_down_delay: timedelta = timedelta(0)
    """how long a lower recommendation must hold before scaling down"""
    stable_window: timedelta = timedelta(seconds=60)
    """the window the average concurrency is taken over (6 s to 1 h)"""
    panic_window_percentage: float = Field(default=10.0, ge=1, le=100)
    """panic window, as a share of the stable window"""
    panic_threshold_percentage: float = Field(default=200.0, ge=110, le=1000)
    """load (share of capacity) at which the autoscaler panics"""
    scale_to_zero_retention: timedelta = timedelta(0)
    """how long the last instance stays after traffic stops"""

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
    """A Kubernetes toleration of a node taint."""

    key: str
    """the taint's key"""
    operator: Literal["Exists", "Equal"] = "Exists"
    """Exists matches any value; Equal matches ``value``"""
    value: str | None = None
    """the taint's value (with Equal)"""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"
    """the taint effect it tolerates (unset: all)"""


class Resources(_Frozen):
    """Requests and limits. ``gpus > 0`` makes a GPU function (``nvidia.com/gpu``)."""

    cpu: str = "250m"
    """CPU request"""
    memory: str = "512Mi"
    """memory request"""
    cpu_limit: str | None = None
    """CPU limit (unset: none)"""
    memory_limit: str | None = None
    """memory limit (unset: the request)"""
    gpus: int = Field(default=0, ge=0)
    """GPUs per instance; above 0 makes a GPU function"""
    gpu_resource: str = "nvidia.com/gpu"
    """the extended resource GPUs are requested as"""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """node labels instances must run on"""
    tolerations: tuple[Toleration, ...] = ()
    """taints instances tolerate"""


class Batching(_Frozen):
    """Dynamic batching: concurrent requests coalesce into one model call."""

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    """requests coalesced into one call, at most"""
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)
    """how long the first request of a batch waits for others"""


class Delivery(_Frozen):
    """Knative's delivery spec: retries, backoff, per-attempt timeout, dead letter.

    ``dead_letter_sink`` is an ``http(s)://`` URL or a Kafka topic name.
    """

    retry: int = Field(default=3, ge=0, le=1000)
    """retries after the first attempt"""
    backoff_policy: Literal["linear", "exponential"] = "exponential"
    """how the delay between retries grows"""
    backoff_delay: timedelta = timedelta(milliseconds=200)
    """delay before the first retry"""
    timeout: timedelta | None = timedelta(seconds=30)
    """per-attempt timeout (unset: none)"""
    dead_letter_sink: str | None = None
    """where events that exhaust their retries go: an http(s) URL or a topic"""

    def backoff(self, attempt: int) -> timedelta:
        """Delay before retry number ``attempt`` (1-based), as Knative computes it."""
        if self.backoff_policy == "linear":
            return self.backoff_delay * attempt
        factor: int = 2 ** (attempt - 1)
        return self.backoff_delay * factor


class EventBatch(_Frozen):
    """Batch delivery (``application/cloudevents-batch+json``): up to N events or T ms."""

    max_events: int = Field(default=100, ge=1, le=10_000)
    """events per batch, at most"""
    max_wait_ms: float = Field(default=50.0, ge=0)
    """how long a batch waits to fill"""


class KafkaSource(_Frozen):
    """A KafkaSource: records on ``topics`` become CloudEvents POSTed to the function."""

    name: str | None = None
    """the source's name (unset: derived from the function and the topics)"""
    topics: tuple[str, ...] = Field(min_length=1)
    """Kafka topics to consume"""
    consumer_group: str | None = None
    """consumer group (unset: derived from the function and source names)"""
    initial_offset: Literal["earliest", "latest"] = "earliest"
    """where a new consumer group starts"""
    ordering: Literal["ordered", "unordered"] = "ordered"
    """ordered: one event at a time per partition; unordered: in parallel"""
    delivery: Delivery = Delivery()
    """retries, backoff, timeout and dead letter of its deliveries"""
    batch: EventBatch | None = None
    """deliver batches of events (unset: one event per request)"""


class Subscription(_Frozen):
    """A Trigger on a broker, with filters in Knative's dialect.

    ``filters`` is Knative's ``spec.filters`` list (``exact``, ``prefix``, ``suffix``,
    ``all``, ``any``, ``not``); ``attributes`` is the legacy ``spec.filter.attributes``.
    """

    name: str | None = None
    """the trigger's name (unset: derived from the function)"""
    broker: str = "default"
    """the broker whose events the trigger filters"""
    filters: tuple[dict[str, Any], ...] = ()
    """Knative's `spec.filters` (exact, prefix, suffix, all, any, not)"""
    attributes: dict[str, str] = Field(default_factory=dict)
    """Knative's legacy `spec.filter.attributes` (exact match)"""
    delivery: Delivery = Delivery()
    """retries, backoff, timeout and dead letter of its deliveries"""
    batch: EventBatch | None = None
    """deliver batches of events (unset: one event per request)"""


class ModelRef(_Frozen):
    """The model an inference function serves, by name in the model store."""

    name: str
    """the model's name in the store"""
    backend: Literal["sklearn", "torch"] = "sklearn"
    """how the model's files are loaded"""
    poll_seconds: float = Field(default=2.0, gt=0)
    """how often the store is checked for a new version (events swap sooner)"""


class RetrainPolicy(_Frozen):
    """When to retrain: after ``every_rows`` new rows, or ``every_seconds`` with ``min_rows``."""

    model: str
    """the model it trains"""
    every_rows: int | None = Field(default=None, ge=1)
    """retrain after this many new rows"""
    every_seconds: float | None = Field(default=None, gt=0)
    """retrain on this period (when at least min_rows are new)"""
    min_rows: int = Field(default=1, ge=1)
    """new rows a periodic retraining needs"""
    debounce_seconds: float = Field(default=0.5, ge=0)
    """quiet time after a burst before training starts"""
    tolerance: float = Field(default=0.01, ge=0, le=1)
    """how much worse than the served model a candidate may score and still publish"""
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    """share of rows held out for the evaluation gate"""


class Rollout(_Frozen):
    """How a new model version reaches traffic: hot swap, or a canary with auto-promotion."""

    strategy: Literal["replace", "canary"] = "replace"
    """replace: hot swap; canary: a revision pinned to the new version takes a share first"""
    percent: int = Field(default=20, ge=1, le=99)
    """the canary's share of traffic"""
    window_seconds: float = Field(default=30.0, gt=0)
    """how long a canary is observed before it is judged"""
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    """5xx share above which the canary rolls back"""
    max_latency_ratio: float = Field(default=1.5, ge=1)
    """canary latency over the current revision's above which it rolls back"""
    min_requests: int = Field(default=20, ge=0)
    """requests the canary must answer before it is judged"""


class FunctionSpec(_Frozen):
    """Everything the platforms need to know about one function."""

    name: str
    """a DNS label: it becomes the Knative Service name"""
    kind: FunctionKind
    """inference, event (mlfn decorators), http or cloudevent (plain functions-framework)"""
    module: str
    """the Python module that defines it"""
    entrypoint: str
    """the callable's name in that module"""
    description: str = ""
    """what it does (the docstring by default)"""
    timeout_seconds: int = Field(default=300, ge=1, le=3600)
    """request timeout (Knative's timeoutSeconds)"""
    scaling: Scaling = Scaling()
    """autoscaling"""
    resources: Resources = Resources()
    """requests, limits, GPUs, placement"""
    batching: Batching | None = None
    """dynamic batching of inference requests (unset: one call per request)"""
    model: ModelRef | None = None
    """the model an inference function serves"""
    sources: tuple[KafkaSource, ...] = ()
    """KafkaSources: topics whose records become events"""
    subscriptions: tuple[Subscription, ...] = ()
    """Triggers on a broker"""
    reply_to_broker: str | None = Field(
        default="default", description="broker that reply events go to; None drops replies"
    )
    emits: tuple[str, ...] = Field(default=(), description="CloudEvent types it may reply with")
    job: bool = Field(
        default=False, description="run as a JobSink job, outliving the request timeout"
    )
    retrain: RetrainPolicy | None = None
    """when a retrain function trains"""
    rollout: Rollout = Rollout()
    """how a new model version reaches traffic"""
    env: dict[str, str] = Field(default_factory=dict)
    """extra environment variables of its containers"""

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
