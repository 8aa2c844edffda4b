"""The local platform's section of the settings (``MLFN_PLATFORM_*``), and its root."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from eventing.settings import EventingRoot
from runtime.settings import Section

__all__ = ["LocalRoot", "PlatformSettings"]


class PlatformSettings(Section):
    """``mlfn dev``: gateway, autoscaler, revisions, instances (defaults sized for a laptop)."""

    model_config = SettingsConfigDict(
        env_prefix="MLFN_PLATFORM_", extra="ignore", frozen=True, populate_by_name=True
    )

    domain: str = Field(
        default="example.com",
        validation_alias=AliasChoices("MLFN_PLATFORM_DOMAIN", "MLFN_DOMAIN"),
        description="host suffix <fn>.<ns>.<domain> the gateway routes (also MLFN_DOMAIN)",
    )
    host: str = Field(default="127.0.0.1", description="address the gateway binds")
    port: int = Field(default=8080, ge=0, le=65535, description="gateway port; 0: free")
    server: str = Field(
        default="localplatform.instance:run",
        description="module:callable(function, settings, port, host) each instance runs",
    )
    preload: str = Field(
        default="flask,numpy,sklearn,skops.io,gevent,gunicorn.workers.ggevent",
        description="modules the zygote imports before forking instances (comma-separated)",
    )
    eventing: bool = Field(default=True, description="start broker + eventing plane")
    stable_window_seconds: float = Field(
        default=6.0, ge=1, description="local stable window, unless a function sets its own"
    )
    scale_to_zero_grace_seconds: float = Field(
        default=2.0, ge=0, description="idle time before the last instance stops"
    )
    tick_seconds: float = Field(default=0.5, gt=0, description="autoscaler period")
    max_scale_up_rate: float = Field(
        default=1000.0, gt=1, description="most an autoscaler tick multiplies instances by"
    )
    max_scale_down_rate: float = Field(
        default=2.0, gt=1, description="most an autoscaler tick divides instances by"
    )
    max_instances: int = Field(
        default=8, ge=1, description="cap per revision when a function's max_scale is 0"
    )
    watch_seconds: float = Field(
        default=1.0, ge=0, description="poll period for source changes (new revisions); 0: off"
    )
    drain_seconds: float = Field(default=10.0, ge=0, description="shutdown grace")


class LocalRoot(EventingRoot):
    """The eventing root plus ``platform``."""

    platform: PlatformSettings = Field(default_factory=PlatformSettings)
