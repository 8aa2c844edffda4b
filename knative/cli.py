"""The `mlfn` commands that knative provides. Heavy imports stay inside the commands."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from runtime.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
LOCAL_DOWN = "the local platform is not running; start it with `make dev`"


def _fail_on_mlfn_errors(fn: F) -> F:
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


def _namespace_option(fn: F) -> F:
    return click.option(
        "--namespace", "-n", default=None, help="Kubernetes namespace (default: MLFN_NAMESPACE)."
    )(fn)


def _connect(settings: Settings) -> Any:
    from knative.cluster import connect

    # Read here, not by the kubernetes package: it freezes KUBECONFIG when first imported.
    config_file = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return connect(config_file=config_file, context=settings.kube_context)


@click.command()
@_namespace_option
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
@_fail_on_mlfn_errors
def render(
    settings: Settings,
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
@_fail_on_mlfn_errors
def build(settings: Settings, function: str | None, push: bool, registry: str | None) -> None:
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
    digest = context_digest(repo, settings.functions_package)
    refs = image_refs(registry or settings.registry, digest)
    built = {}
    for variant in variants:
        click.echo(f"building {refs[variant]} with {builder.name}")
        built[variant] = build_image(
            builder, repo, settings.functions_package, refs[variant], variant, push=push
        )
        click.echo(f"built {built[variant]}")
    write_record(settings.home / RECORD, digest, built)


@click.command()
@click.option("--function", "-f", "function", default=None, help="Deploy only this function.")
@_namespace_option
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to wait for Ready (default: MLFN_DEPLOY_TIMEOUT_SECONDS).",
)
@click.pass_obj
@_fail_on_mlfn_errors
def deploy(
    settings: Settings, function: str | None, namespace: str | None, timeout: float | None
) -> None:
    """Apply the manifests (server-side apply) and wait until everything is Ready.

    Example: make deploy FUNCTION=predict   (or: mlfn deploy -f predict -n ml)
    """
    from knative.deploy import apply_all
    from knative.render import render_settings

    rendered = render_settings(settings, Path.cwd(), namespace=namespace, only=function)
    cluster = _connect(settings)
    click.echo(f"applying {len(rendered.all())} objects to {cluster.host}")
    statuses = apply_all(
        cluster,
        rendered.all(),
        timeout=timeout or settings.deploy_timeout_seconds,
        progress=click.echo,
    )
    for s in statuses:
        if s.kind == "Service" and s.url:
            click.echo(f"{s.name}: {s.url}")


@click.command()
@click.option("--function", "-f", "function", default=None, help="Remove only this function.")
@_namespace_option
@click.pass_obj
@_fail_on_mlfn_errors
def undeploy(settings: Settings, function: str | None, namespace: str | None) -> None:
    """Delete what `mlfn deploy` applied (Knative's own config is left alone).

    Example: mlfn undeploy -f predict
    """
    from knative.deploy import delete_all
    from knative.render import render_settings

    rendered = render_settings(settings, Path.cwd(), namespace=namespace, only=function)
    objects = [o for objs in rendered.functions.values() for o in objs]
    if function is None:
        objects = rendered.shared + objects
    delete_all(_connect(settings), objects, progress=click.echo)


def _local(call: Callable[[], str]) -> str:
    try:
        return call()
    except (ImportError, ConnectionError, OSError) as err:
        raise click.ClickException(f"{LOCAL_DOWN} ({type(err).__name__}: {err})") from err


@click.command()
@click.option("--cluster", is_flag=True, help="Ask Knative instead of the local platform.")
@_namespace_option
@click.pass_obj
@_fail_on_mlfn_errors
def status(settings: Settings, cluster: bool, namespace: str | None) -> None:
    """Functions, revisions, sources and triggers: local platform, or Knative with --cluster.

    Example: mlfn status --cluster -n ml
    """
    if cluster:
        from knative.deploy import service_status, status_lines

        objs = service_status(_connect(settings), namespace or settings.namespace)
        click.echo("\n".join(status_lines(objs)) or "no mlfn objects in the namespace")
        return

    def local() -> str:
        control = importlib.import_module("localplatform.control")
        return str(control.status_text(settings))

    click.echo(_local(local))


@click.command()
@click.argument("function")
@click.option(
    "--percent",
    type=click.IntRange(1, 99),
    default=None,
    help="Send P% to the latest revision (tag candidate), the rest to the previous.",
)
@click.option("--promote", is_flag=True, help="Send 100% to the latest revision.")
@click.option("--rollback", is_flag=True, help="Send 100% back to the previous revision.")
@click.option(
    "--model-version",
    type=click.IntRange(min=1),
    default=None,
    help="Pin the Service's revision template to this model version (cluster; a new "
    "revision that Flagger analyses).",
)
@click.option(
    "--pin-event",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Like --model-version, from a structured mlfn.model.published CloudEvent (the "
    "JobSink job of a canary function runs this).",
)
@click.option("--cluster", is_flag=True, help="Act on Knative instead of the local platform.")
@_namespace_option
@click.pass_obj
@_fail_on_mlfn_errors
def rollout(
    settings: Settings,
    function: str,
    percent: int | None,
    promote: bool,
    rollback: bool,
    model_version: int | None,
    pin_event: Path | None,
    cluster: bool,
    namespace: str | None,
) -> None:
    """Canary rollout of FUNCTION: split traffic, promote, roll back, or pin a model version.

    Example: mlfn rollout predict --percent 20 --cluster

    Pin a canary Service to a model version (Flagger then analyses the new revision):
    mlfn rollout predict --model-version 7 --cluster
    """
    moves = [percent is not None, promote, rollback, model_version is not None, bool(pin_event)]
    if sum(moves) != 1:
        raise click.UsageError(
            "give exactly one of --percent P, --promote, --rollback, --model-version N, "
            "--pin-event FILE"
        )
    if model_version is not None or pin_event is not None:
        if not cluster:
            raise click.UsageError(
                "--model-version and --pin-event act on a cluster (add --cluster); locally "
                "a published version makes its canary revision by itself"
            )
        from knative.rollout import pin_model_version, version_from_event

        version = model_version or version_from_event(pin_event)  # type: ignore[arg-type]
        ns = namespace or settings.namespace
        pin_model_version(_connect(settings), function, ns, version)
        click.echo(f"{function}: revision template pinned to model v{version}")
        return
    if cluster:
        from knative.rollout import Action
        from knative.rollout import rollout as cluster_rollout

        action: Action = "promote" if promote else "rollback" if rollback else "percent"
        result = cluster_rollout(
            _connect(settings), function, namespace or settings.namespace, action, percent or 0
        )
        click.echo(result.text())
        return

    def local() -> str:
        control = importlib.import_module("localplatform.control")
        return str(
            control.rollout(settings, function, percent=percent, promote=promote, rollback=rollback)
        )

    click.echo(_local(local))


COMMANDS: list[click.Command] = [render, build, deploy, undeploy, status, rollout]
