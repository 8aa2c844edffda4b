"""The commands that ask either back end: ``mlfn status`` and ``mlfn rollout``.

Without ``--cluster`` they talk to a running ``mlfn dev`` (its control API); with it, to
Knative through the current kube context. Composing both back ends is the command
line's job, so they live here.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from knative.cli import connect_cluster, fail_on_mlfn_errors, namespace_option
from mlfn.settings import Settings

__all__ = ["COMMANDS"]

LOCAL_DOWN = "the local platform is not running; start it with `make dev`"


def _local(call: Callable[[], str]) -> str:
    try:
        return call()
    except (ImportError, ConnectionError, OSError) as err:
        raise click.ClickException(f"{LOCAL_DOWN} ({type(err).__name__}: {err})") from err


@click.command()
@click.option("--cluster", is_flag=True, help="Ask Knative instead of the local platform.")
@namespace_option
@click.pass_obj
@fail_on_mlfn_errors
def status(settings: Settings, cluster: bool, namespace: str | None) -> None:
    """Functions, revisions, sources and triggers: local platform, or Knative with --cluster.

    Example: mlfn status --cluster -n ml
    """
    if cluster:
        from knative.deploy import service_status, status_lines

        objs = service_status(connect_cluster(settings), namespace or settings.common.namespace)
        click.echo("\n".join(status_lines(objs)) or "no mlfn objects in the namespace")
        return

    def local() -> str:
        from localplatform.control import status_text

        return status_text(settings)

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
@click.option("--cluster", is_flag=True, help="Act on Knative instead of the local platform.")
@namespace_option
@click.pass_obj
@fail_on_mlfn_errors
def rollout(
    settings: Settings,
    function: str,
    percent: int | None,
    promote: bool,
    rollback: bool,
    cluster: bool,
    namespace: str | None,
) -> None:
    """Canary rollout of FUNCTION: split traffic, promote or roll back.

    Example: mlfn rollout predict --percent 20 --cluster
    """
    if sum([percent is not None, promote, rollback]) != 1:
        raise click.UsageError("give exactly one of --percent P, --promote, --rollback")
    if cluster:
        from knative.rollout import Action
        from knative.rollout import rollout as cluster_rollout

        action: Action = "promote" if promote else "rollback" if rollback else "percent"
        result = cluster_rollout(
            connect_cluster(settings),
            function,
            namespace or settings.common.namespace,
            action,
            percent or 0,
        )
        click.echo(result.text())
        return

    def local() -> str:
        from localplatform.control import rollout as local_rollout

        return local_rollout(
            settings, function, percent=percent, promote=promote, rollback=rollback
        )

    click.echo(_local(local))


COMMANDS: list[click.Command] = [status, rollout]
