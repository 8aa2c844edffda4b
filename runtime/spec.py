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
    "CLASS_METRICS",
    "HPA_CLASS",
    "KPA_CLASS",
    "MIN_ANALYSIS_INTERVAL",
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
    "check_function_name",
    "format_go_duration",
    "format_iso_duration",
]

FunctionKind = Literal["inference", "event", "http", "cloudevent"]
"""``inference``/``event``: mlfn decorators; ``http``/``cloudevent``: plain functions-framework."""

_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_function_name(name: str) -> str:
    """Return ``name`` if it can name a function; raise ``ValueError`` saying why not.

    A function name becomes a Knative Service name, so it is a DNS label.
    """
    if not _NAME.match(name) or len(name) > 63:
        raise ValueError(
            f"function name {name!r} must be a DNS label (lowercase letters, digits and '-', "
            "starting with a letter, at most 63 characters): it becomes a Knative Service name"
        )
    return name


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


KPA_CLASS = "kpa.autoscaling.knative.dev"
HPA_CLASS = "hpa.autoscaling.knative.dev"
CLASS_METRICS: dict[str, tuple[str, ...]] = {
    KPA_CLASS: ("concurrency", "rps"),
    HPA_CLASS: ("cpu", "memory"),
}
"""The metrics each Knative autoscaler class scales on (its admission webhook's rule)."""


class Scaling(_Frozen):
    """Knative autoscaling knobs (``autoscaling.knative.dev/*`` annotations).

    ``target`` is the soft per-instance target (concurrency, or requests/s with
    ``metric="rps"``, or the utilisation percentage of the request with ``metric="cpu"``
    or ``"memory"``); ``container_concurrency`` is the hard limit (0: unlimited).

    The class decides the metrics: Knative's KPA (the default) scales on ``concurrency``
    or ``rps``; the HPA class (``hpa.autoscaling.knative.dev``, a Kubernetes
    HorizontalPodAutoscaler) on ``cpu`` or ``memory`` and never to zero.
    """

    autoscaler_class: Literal["kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"] = (
        "kpa.autoscaling.knative.dev"
    )
    """Knative's KPA (concurrency, rps) or the HPA (cpu, memory)"""
    metric: Literal["concurrency", "rps", "cpu", "memory"] = "concurrency"
    """what the autoscaler measures (KPA: concurrency or rps; HPA: cpu or memory)"""
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
        allowed = CLASS_METRICS[self.autoscaler_class]
        if self.metric not in allowed:
            other = next(c for c, m in CLASS_METRICS.items() if self.metric in m)
            raise ValueError(
                f"autoscaler_class {self.autoscaler_class!r} does not scale on metric "
                f"{self.metric!r} (it scales on {' or '.join(allowed)}); use "
                f"autoscaler_class={other!r} for {self.metric!r}, or one of its metrics"
            )
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
    key_type: Literal["string", "int", "float", "byte-array"] = "string"
    """how record keys become the ``key`` extension (Knative's key-type label): UTF-8
    string, 4/8-byte big-endian int or float, or byte-array (base64); a key that does not
    decode is dead-lettered"""


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
    """How a new revision (new code, or a new model version) reaches traffic.

    ``replace``: hot swap (a new model version) or Knative's default (new code: all
    traffic to the new revision once it is ready). ``canary``: Flagger's progressive
    canary analysis, with Flagger's parameters and semantics on both back ends (the
    cluster renders a Flagger ``Canary``; ``mlfn dev`` runs the same state machine in
    :mod:`localplatform.canary`). Every ``interval`` the candidate's last interval of
    requests is checked: success rate (non-5xx) at least ``min_success_rate`` %, p99
    latency at most ``max_latency_p99``, and (with ``min_model_quality`` and a model)
    the served version's ``quality_metric`` at least ``min_model_quality``. A passing
    check adds ``step_weight`` % of traffic until ``max_weight``, then the next passing
    check promotes; a failing check (or one without data) counts, and ``threshold``
    failed checks roll back. With ``iterations`` > 0 it is Flagger's blue/green
    instead: the candidate gets no routed traffic for ``iterations`` passing checks
    (send it traffic through its own URL), then all of it.
    """

    strategy: Literal["replace", "canary"] = "replace"
    """replace: hot swap; canary: Flagger's analysis (a revision per new model version)"""
    step_weight: int = Field(
        default=20, ge=1, le=100, description="traffic % added per passing check (stepWeight)"
    )
    max_weight: int = Field(
        default=60, ge=1, le=100, description="traffic % the candidate reaches before promotion"
    )
    interval: timedelta = Field(
        default=timedelta(seconds=30), description="time between checks, and each check's window"
    )
    threshold: int = Field(default=5, ge=1, description="failed checks before a rollback")
    iterations: int = Field(
        default=0, ge=0, description="0: progressive canary; N: blue/green over N checks"
    )
    min_success_rate: float = Field(
        default=99.0, ge=0, le=100, description="% of the candidate's requests answered non-5xx"
    )
    max_latency_p99: timedelta = Field(
        default=timedelta(milliseconds=500), description="99th percentile request latency"
    )
    min_model_quality: float | None = Field(
        default=None,
        description="lowest `quality_metric` of the served model version; None: not checked",
    )
    quality_metric: str = Field(
        default="accuracy", description="the model version's holdout metric that is checked"
    )

    @field_validator("interval")
    @classmethod
    def _flagger_interval(cls, v: timedelta) -> timedelta:
        if v < MIN_ANALYSIS_INTERVAL:
            raise ValueError(
                f"interval {v.total_seconds():g}s is below 10s, which Flagger raises to 10s; "
                "set interval to 10s or more (MLFN_LOOP_CANARY_INTERVAL_SECONDS shortens it "
                "on the local platform for tests)"
            )
        return v

    @field_validator("quality_metric")
    @classmethod
    def _metric_label(cls, v: str) -> str:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", v):
            raise ValueError(
                f"quality_metric {v!r} must be a Prometheus label value of [a-zA-Z0-9_]"
            )
        return v

    @model_validator(mode="after")
    def _weights(self) -> Rollout:
        if self.step_weight > self.max_weight:
            raise ValueError(
                f"step_weight ({self.step_weight}) is above max_weight ({self.max_weight}); "
                "lower step_weight or raise max_weight"
            )
        return self


MIN_ANALYSIS_INTERVAL = timedelta(seconds=10)
"""Flagger runs a canary's analysis at most this often (shorter intervals are raised to it)."""


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
    grpc: bool = Field(
        default=False,
        description="inference: serve the Open Inference Protocol over gRPC (on Knative the "
        "revision's one port speaks h2c, so its URL takes gRPC; locally `mlfn dev` routes it)",
    )
    env: dict[str, str] = Field(default_factory=dict)
    """extra environment variables of its containers"""

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        return check_function_name(v)

    @model_validator(mode="after")
    def _quality_needs_a_model(self) -> FunctionSpec:
        if self.rollout.min_model_quality is not None and self.model is None:
            raise ValueError(
                f"rollout.min_model_quality is set but {self.name} serves no model; "
                "give it model=... or drop min_model_quality"
            )
        return self

    @model_validator(mode="after")
    def _grpc_is_for_inference(self) -> FunctionSpec:
        if self.grpc and self.kind != "inference":
            raise ValueError(
                f"grpc=True needs an inference function; {self.name} is a {self.kind} function"
            )
        return self

    @property
    def is_gpu(self) -> bool:
        return self.resources.gpus > 0

    @property
    def is_event(self) -> bool:
        return self.kind in ("event", "cloudevent")
