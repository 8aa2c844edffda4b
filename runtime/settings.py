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
    threads: int = Field(default=128, ge=1, description="server worker threads")

    # --- models -----------------------------------------------------------------
    model_store: Path | None = Field(default=None, description="default: HOME/models")
    dataset_store: Path | None = Field(default=None, description="default: HOME/datasets")

    # --- eventing ---------------------------------------------------------------
    bootstrap_servers: str | None = Field(
        default=None, description="external Kafka HOST:PORT; unset: the embedded broker"
    )
    partitions: int = Field(default=4, ge=1, description="partitions of topics mlfn creates")

    # --- knative ----------------------------------------------------------------
    registry: str = Field(default="registry.local/mlfn", description="image registry")

    # --- local platform ---------------------------------------------------------
    domain: str = Field(default="example.com", description="host suffix <fn>.<ns>.<domain>")

    @property
    def model_store_path(self) -> Path:
        return self.model_store or self.home / "models"

    @property
    def dataset_store_path(self) -> Path:
        return self.dataset_store or self.home / "datasets"
