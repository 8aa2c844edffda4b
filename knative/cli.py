"""The `mlfn` commands that knative provides. Heavy imports stay inside the commands."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from knative.settings import ClusterRoot

__all__ = ["COMMANDS", "connect_cluster", "fail_on_mlfn_errors", "namespace_option"]

F = TypeVar("F", bound=Callable[..., Any])


def fail_on_mlfn_errors(fn: F) -> F:
    """Turn mlfn's own errors (they say what to do) into a clean `Error:` and exit 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from runtime.errors import MlfnError

        try:
            return fn(*args, **kwargs)
        except MlfnError as err:
            raise click.ClickException(str(err)) from err

    return wrapper  # type: ignore[return-value]


def namespace_option(fn: F) -> F:
    return click.option(
        "--namespace", "-n", default=None, help="Kubernetes namespace (default: MLFN_NAMESPACE)."
    )(fn)


def connect_cluster(settings: ClusterRoot) -> Any:
    from knative.cluster import connect

    # Read here, not by the kubernetes package: it freezes KUBECONFIG when first imported.
    config_file = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return connect(config_file=config_file, context=settings.knative.kube_context)


@click.command()
@namespace_option
@click.option("--registry", default=None, help="Image registry (default: MLFN_REGISTRY).")
@click.option(
    "--output",
    "-o",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write one file per function into DIR instead of stdout.",
)
@click.option("--function", "-f", "function", default=None, help="Render only this function.")
@click.pass_obj
@fail_on_mlfn_errors
def render(
    settings: ClusterRoot,
    namespace: str | None,
    registry: str | None,
    out: Path | None,
    function: str | None,
) -> None:
    """Print the Knative manifests for the functions (one YAML stream).

    Example: mlfn render --namespace ml -o deploy/
    """
    from knative.render import render_settings, to_yaml, write_dir

    rendered = render_settings(
        settings, Path.cwd(), namespace=namespace, registry=registry, only=function
    )
    if out is None:
        click.echo(to_yaml(rendered.all()), nl=False)
        return
    for path in write_dir(rendered, out):
        click.echo(f"wrote {path}")


@click.command()
@click.option(
    "--function",
    "-f",
    "function",
    default=None,
    help="Build only the image variant this function needs.",
)
@click.option("--push", is_flag=True, help="Push and record the registry digest.")
@click.option("--registry", default=None, help="Image registry (default: MLFN_REGISTRY).")
@click.pass_obj
@fail_on_mlfn_errors
def build(settings: ClusterRoot, function: str | None, push: bool, registry: str | None) -> None:
    """Build the function images with docker, podman or buildah (whichever works).

    Images are tagged by the content digest of their sources; with --push the registry
    digest is recorded so `mlfn render` references image@sha256:...

    Example: mlfn build --push --registry ghcr.io/me
    """
    from knative.build import build_image, context_digest, detect_builder, image_refs, write_record
    from knative.render import RECORD, load_specs

    repo = Path.cwd()
    specs = load_specs(settings)
    if function is not None:
        specs = [s for s in specs if s.name == function]
        if not specs:
            raise click.ClickException(f"no function named {function!r}")
    variants = sorted({"cuda" if s.is_gpu else "cpu" for s in specs}) or ["cpu"]
    builder = detect_builder(os.environ.get("PATH", os.defpath))
    digest = context_digest(repo, settings.common.functions_package)
    refs = image_refs(registry or settings.knative.registry, digest)
    built = {}
    for variant in variants:
        click.echo(f"building {refs[variant]} with {builder.name}")
        built[variant] = build_image(
            builder, repo, settings.common.functions_package, refs[variant], variant, push=push
        )
        click.echo(f"built {built[variant]}")
    write_record(settings.common.home / RECORD, digest, built)


@click.command()
@click.option("--function", "-f", "function", default=None, help="Deploy only this function.")
@namespace_option
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to wait for Ready (default: MLFN_DEPLOY_TIMEOUT_SECONDS).",
)
@click.pass_obj
@fail_on_mlfn_errors
def deploy(
    settings: ClusterRoot, function: str | None, namespace: str | None, timeout: float | None
) -> None:
    """Apply the manifests (server-side apply) and wait until everything is Ready.

    Example: make deploy FUNCTION=predict   (or: mlfn deploy -f predict -n ml)
    """
    from knative.deploy import apply_all
    from knative.render import render_settings

    rendered = render_settings(settings, Path.cwd(), namespace=namespace, only=function)
    cluster = connect_cluster(settings)
    click.echo(f"applying {len(rendered.all())} objects to {cluster.host}")
    statuses = apply_all(
        cluster,
        rendered.all(),
        timeout=timeout or settings.knative.deploy_timeout_seconds,
        progress=click.echo,
    )
    for s in statuses:
        if s.kind == "Service" and s.url:
            click.echo(f"{s.name}: {s.url}")


@click.command()
@click.option("--function", "-f", "function", default=None, help="Remove only this function.")
@namespace_option
@click.pass_obj
@fail_on_mlfn_errors
def undeploy(settings: ClusterRoot, function: str | None, namespace: str | None) -> None:
    """Delete what `mlfn deploy` applied (Knative's own config is left alone).

    Example: mlfn undeploy -f predict
    """
    from knative.deploy import delete_all
    from knative.render import render_settings

    rendered = render_settings(settings, Path.cwd(), namespace=namespace, only=function)
    objects = [o for objs in rendered.functions.values() for o in objs]
    if function is None:
        objects = rendered.shared + objects
    delete_all(connect_cluster(settings), objects, progress=click.echo)


COMMANDS: list[click.Command] = [render, build, deploy, undeploy]
