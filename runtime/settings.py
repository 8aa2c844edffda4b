"""Settings of the runtime, read once at the entry point from ``MLFN_*`` environment variables.

Library code receives a settings object; it never reads ``os.environ``. Each package owns
a section (a ``BaseSettings`` with its own env prefix) declared in its own
``settings.py``; the roots compose sections, one floor at a time:

- :class:`RuntimeSettings` (here): ``common``, ``server``, ``models``, ``loop``: what
  ``mlfn serve`` needs;
- ``eventing.settings.EventingRoot`` adds ``eventing``; ``localplatform.settings.LocalRoot``
  adds ``platform``; ``knative.settings.ClusterRoot`` adds ``knative``;
- ``mlfn.settings.Settings``, the root the command line reads, has them all.

Every default is declared once, on its field, with a ``description`` from which
``docs/settings.md`` is generated.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.logs import LogFormat

__all__ = [
    "CommonSettings",
    "LoopSettings",
    "ModelSettings",
    "RuntimeSettings",
    "Section",
    "ServerSettings",
    "default_of",
]


class Section(BaseSettings):
    """A settings section: frozen, ``MLFN_<FIELD>`` in the environment unless it says otherwise."""

    model_config = SettingsConfigDict(env_prefix="MLFN_", extra="ignore", frozen=True)


def default_of(section: type[BaseSettings], name: str) -> Any:
    """The default declared on a section's field, for code that must not repeat it.

    Example:
        >>> default_of(ServerSettings, "queue_depth")
        256
    """
    return section.model_fields[name].get_default(call_default_factory=True)


class CommonSettings(Section):
    """Settings every package reads."""

    functions_package: str = Field(
        default="functions", description="Python package whose modules hold the functions"
    )
    home: Path = Field(default=Path(".mlfn"), description="local state: model and dataset stores")
    namespace: str = Field(default="default", description="Knative namespace (and local one)")
    log_level: str = Field(default="INFO", description="root log level")
    log_format: LogFormat = Field(
        default="auto",
        description="log lines: json, text (short human lines), or auto: text on a terminal, "
        "json otherwise",
    )
    no_color: bool = Field(
        default=False,
        validation_alias=AliasChoices("NO_COLOR", "no_color"),
        description="NO_COLOR (no-color.org; not MLFN_-prefixed): set to turn colour off in text logs",
    )

    @field_validator("no_color", mode="before")
    @classmethod
    def _any_value_is_set(cls, v: object) -> object:
        # no-color.org: present and not empty means no colour, whatever the value says
        return bool(v) if isinstance(v, str) else v


class ServerSettings(Section):
    """The server that runs one function (``mlfn serve``)."""

    # ``revision`` is read from K_REVISION too; by name it can still be given directly
    model_config = SettingsConfigDict(
        env_prefix="MLFN_", extra="ignore", frozen=True, populate_by_name=True
    )

    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="larger request bodies are answered 413"
    )
    drain_seconds: float = Field(default=20.0, ge=0, description="SIGTERM grace period")
    queue_depth: int = Field(
        default=256, ge=0, description="requests that may wait beyond containerConcurrency"
    )
    queue_timeout_seconds: float = Field(
        default=10.0, gt=0, description="how long a queued request waits before a 503"
    )
    max_json_depth: int = Field(
        default=64,
        ge=1,
        le=200,  # pydantic's JSON parser stops at about 200 levels with an error of its own
        description="deepest nesting of arrays and objects a request body may have (else 400)",
    )
    threads: int = Field(
        default=128,
        ge=1,
        description="threads per worker of plain HTTP and retrain functions (the others run gevent)",
    )
    batching: bool = Field(
        default=True, description="honour spec.batching; false: one call per request"
    )
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="serve the Open Inference Protocol over gRPC on this port too (0: free)",
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="server worker processes of `mlfn serve`; 0: one per CPU the container "
        "may use (cgroup CPU quota, else the CPU affinity)",
    )
    ready_timeout_seconds: float = Field(
        default=120.0, gt=0, description="how long `mlfn invoke` waits for the model to load"
    )
    revision: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFN_REVISION", "K_REVISION"),
        description="the revision this server belongs to (Knative sets K_REVISION); "
        "a `revision` label on every metric",
    )


class ModelSettings(Section):
    """The model and dataset stores."""

    model_store: Path | None = Field(default=None, description="model store; unset: HOME/models")
    dataset_store: Path | None = Field(
        default=None, description="dataset store; unset: HOME/datasets"
    )
    model_bootstrap: bool = Field(
        default=True,
        description="train a model's bootstrap version when the store has none (off in production)",
    )
    dataset_sync: Literal["normal", "full"] = Field(
        default="normal",
        description=(
            "SQLite datasets: normal keeps every committed row when a process is killed "
            "(SIGKILL, OOM); full also fsyncs each commit, so it survives a power loss "
            "(slower ingest)"
        ),
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "postgresql://USER:PASSWORD@HOST:PORT/DB: models, datasets and retraining state "
            "in PostgreSQL, shared by every replica; unset: the local directories under HOME"
        ),
    )
    database_pool_size: int = Field(
        default=8, ge=1, description="connections per process to MLFN_DATABASE_URL"
    )
    artifact_url: str | None = Field(
        default=None,
        description=(
            "s3://BUCKET[/PREFIX]: model files in an S3-compatible object store, the registry "
            "in MLFN_DATABASE_URL (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); "
            "unset: the files in the registry"
        ),
    )
    artifact_endpoint_url: str | None = Field(
        default=None,
        description="URL of an S3-compatible server (MinIO, Ceph); unset: AWS S3",
    )
    model_version: int | None = Field(
        default=None,
        ge=1,
        description="serve exactly this version and do not follow `latest` (a pinned revision)",
    )


class LoopSettings(Section):
    """The closed ML loop (``MLFN_LOOP_*``)."""

    model_config = SettingsConfigDict(env_prefix="MLFN_LOOP_", extra="ignore", frozen=True)

    broker_url: str | None = Field(
        default=None,
        description="broker ingress URL for model.published/rejected (cluster); unset: Kafka",
    )
    keep_rejected: bool = Field(
        default=True, description="store rejected candidates (never made latest) for the record"
    )
    canary_tick_seconds: float = Field(
        default=1.0, gt=0, description="how often the local canary controller reads metrics"
    )
    canary_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        description="local platform only: every canary's analysis interval (tests, demos); "
        "unset: each function's rollout.interval, as Flagger runs it",
    )


class RuntimeSettings(BaseModel):
    """The runtime's sections: everything one function's server needs."""

    model_config = ConfigDict(frozen=True)

    common: CommonSettings = Field(default_factory=CommonSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)

    def updated(self, **sections: Mapping[str, Any]) -> Self:
        """A copy with fields of some sections replaced, validated as the environment would be.

        Example:
            >>> RuntimeSettings().updated(server={"batching": False}).server.batching
            False
        """
        changes: dict[str, Any] = {}
        for name, values in sections.items():
            section = getattr(self, name, None)
            if not isinstance(section, Section):
                raise ValueError(f"no settings section {name!r}; sections: {self._sections()}")
            changes[name] = type(section)(**{**section.model_dump(), **dict(values)})
        return self.model_copy(update=changes)

    def _sections(self) -> str:
        return ", ".join(
            n for n in type(self).model_fields if isinstance(getattr(self, n), Section)
        )

    @property
    def model_store_path(self) -> Path:
        return self.models.model_store or self.common.home / "models"

    @property
    def dataset_store_path(self) -> Path:
        return self.models.dataset_store or self.common.home / "datasets"
