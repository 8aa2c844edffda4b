"""From settings to rendered objects and YAML: the glue between specs, images and builders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from knative.build import context_digest, resolved_images
from knative.manifests import Rendered, render
from knative.manifests.common import KNATIVE_NAMESPACES, Obj, RenderOptions
from knative.manifests.features import WHY
from runtime.settings import Settings
from runtime.spec import FunctionSpec

__all__ = ["container_env", "load_specs", "options_from", "render_settings", "to_yaml", "write_dir"]

RECORD = "images.json"


def container_env(settings: Settings) -> dict[str, str]:
    """The ``MLFN_*`` settings every function container gets."""
    return {
        "MLFN_NAMESPACE": settings.namespace,
        "MLFN_FUNCTIONS_PACKAGE": settings.functions_package,
        "MLFN_LOG_LEVEL": settings.log_level,
        "MLFN_LOG_FORMAT": "json",
        "MLFN_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MLFN_PARTITIONS": str(settings.partitions),
        "MLFN_DRAIN_SECONDS": f"{settings.drain_seconds:g}",
        "MLFN_THREADS": str(settings.threads),
        "MLFN_QUEUE_DEPTH": str(settings.queue_depth),
    }


def options_from(
    settings: Settings, repo: Path, *, namespace: str | None = None, registry: str | None = None
) -> RenderOptions:
    """Render options from settings; images by recorded digest, else by content tag."""
    digest = context_digest(repo, settings.functions_package)
    images = resolved_images(settings.home / RECORD, registry or settings.registry, digest)
    return RenderOptions(
        namespace=namespace or settings.namespace,
        images=images,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        kafka_namespace=settings.kafka_namespace,
        ingress_namespace=settings.ingress_namespace,
        partitions=settings.partitions,
        replication_factor=settings.kafka_replication_factor,
        env={**container_env(settings), "MLFN_NAMESPACE": namespace or settings.namespace},
        metrics_scrape=settings.metrics_scrape,
        monitoring_namespace=settings.monitoring_namespace,
        prometheus_url=settings.prometheus_url,
    )


def load_specs(settings: Settings) -> list[FunctionSpec]:
    """Every function spec in ``settings.functions_package``."""
    from runtime.registry import discover

    return [fn.spec for fn in discover(settings.functions_package)]


def render_settings(
    settings: Settings,
    repo: Path,
    *,
    namespace: str | None = None,
    registry: str | None = None,
    only: str | None = None,
) -> Rendered:
    """Discover the functions and render them with options from ``settings``."""
    opts = options_from(settings, repo, namespace=namespace, registry=registry)
    return render(load_specs(settings), opts, only=only)


def _comment(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.splitlines())


def to_yaml(objects: Sequence[Obj]) -> str:
    """A multi-document YAML stream; Knative config patches carry a comment saying why."""
    docs = []
    explained = False
    for obj in objects:
        text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)
        if obj["metadata"].get("namespace") in KNATIVE_NAMESPACES and not explained:
            text = _comment(WHY) + text
            explained = True
        docs.append(text)
    return "---\n" + "---\n".join(docs) if docs else ""


def write_dir(rendered: Rendered, out: Path) -> list[Path]:
    """Write ``config-features.yaml`` (Knative config), ``shared.yaml`` and ``<function>.yaml``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "config-features.yaml": rendered.cluster,
        "shared.yaml": rendered.shared,
        **{f"{name}.yaml": objs for name, objs in rendered.functions.items()},
    }
    written = []
    for name, objs in files.items():
        if objs:
            path = out / name
            path.write_text(to_yaml(objs))
            written.append(path)
    return written
