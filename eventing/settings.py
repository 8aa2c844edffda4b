"""The eventing section of the settings (``MLFN_*``), and the root eventing code reads."""

from __future__ import annotations

from pydantic import Field

from runtime.settings import RuntimeSettings, Section

__all__ = ["EventingRoot", "EventingSettings"]


class EventingSettings(Section):
    """Kafka, sources, triggers and delivery."""

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
    fetch_wait_ms: int = Field(
        default=5,
        ge=1,
        le=5000,
        description="fetch wait while records flow: the embedded broker answers a fetch at once "
        "when records are there, else looks again after half the wait, three quarters, ...",
    )
    idle_fetch_wait_ms: int = Field(
        default=40,
        ge=1,
        le=5000,
        description="fetch wait after a second without records: fewer empty fetches when idle; "
        "the first record after a pause waits up to half of it at the embedded broker",
    )


class EventingRoot(RuntimeSettings):
    """The runtime's sections plus ``eventing``."""

    eventing: EventingSettings = Field(default_factory=EventingSettings)
