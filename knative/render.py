"""From settings to rendered objects and YAML: the glue between specs, images and builders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from knative.build import context_digest, resolved_images
from knative.manifests import Rendered, render
from knative.manifests.common import KNATIVE_NAMESPACES, Obj, RenderOptions
from knative.manifests.features import WHY
from knative.settings import ClusterRoot
from runtime.spec import FunctionSpec

__all__ = ["container_env", "load_specs", "options_from", "render_settings", "to_yaml", "write_dir"]

RECORD = "images.json"


def container_env(settings: ClusterRoot) -> dict[str, str]:
    """The ``MLFN_*`` settings every function container gets."""
    return {
        "MLFN_NAMESPACE": settings.common.namespace,
        "MLFN_FUNCTIONS_PACKAGE": settings.common.functions_package,
        "MLFN_LOG_LEVEL": settings.common.log_level,
        "MLFN_LOG_FORMAT": "json",
        "MLFN_BOOTSTRAP_SERVERS": settings.knative.kafka_bootstrap_servers,
        "MLFN_PARTITIONS": str(settings.eventing.partitions),
        "MLFN_DRAIN_SECONDS": f"{settings.server.drain_seconds:g}",
        "MLFN_THREADS": str(settings.server.threads),
        "MLFN_QUEUE_DEPTH": str(settings.server.queue_depth),
    }


def options_from(
    settings: ClusterRoot, repo: Path, *, namespace: str | None = None, registry: str | None = None
) -> RenderOptions:
    """Render options from settings; images by recorded digest, else by content tag."""
    digest = context_digest(repo, settings.common.functions_package)
    images = resolved_images(
        settings.common.home / RECORD, registry or settings.knative.registry, digest
    )
    return RenderOptions(
        namespace=namespace or settings.common.namespace,
        images=images,
        bootstrap_servers=settings.knative.kafka_bootstrap_servers,
        kafka_namespace=settings.knative.kafka_namespace,
        ingress_namespace=settings.knative.ingress_namespace,
        partitions=settings.eventing.partitions,
        replication_factor=settings.knative.kafka_replication_factor,
        env={**container_env(settings), "MLFN_NAMESPACE": namespace or settings.common.namespace},
        database_secret=settings.knative.database_secret,
        database_namespace=settings.knative.database_namespace,
        database_port=settings.knative.database_port,
        artifact_url=settings.models.artifact_url or "",
        artifact_endpoint_url=settings.models.artifact_endpoint_url or "",
        artifact_secret=settings.knative.artifact_secret,
        metrics_scrape=settings.knative.metrics_scrape,
        monitoring_namespace=settings.knative.monitoring_namespace,
        prometheus_url=settings.knative.prometheus_url,
    )


def load_specs(settings: ClusterRoot) -> list[FunctionSpec]:
    """Every function spec in ``settings.common.functions_package``."""
    from runtime.registry import discover

    return [fn.spec for fn in discover(settings.common.functions_package)]


def render_settings(
    settings: ClusterRoot,
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
