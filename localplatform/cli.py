"""The `mlfn` commands that localplatform provides. Heavy imports stay inside the commands."""

from __future__ import annotations

import logging

import click

from localplatform.settings import LocalRoot

__all__ = ["COMMANDS"]


@click.command("dev")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Gateway port (default MLFN_PLATFORM_PORT, 8080; 0: a free one).",
)
@click.option(
    "--broker-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the embedded Kafka broker (0: a free one).",
)
@click.option(
    "--bootstrap",
    default=None,
    metavar="HOST:PORT",
    help="Use this Kafka instead of the embedded broker (default MLFN_BOOTSTRAP_SERVERS).",
)
@click.option(
    "--eventing/--no-eventing",
    default=None,
    help="Start the broker and the sources/triggers (default MLFN_PLATFORM_EVENTING, on).",
)
@click.pass_obj
def dev(
    settings: LocalRoot,
    port: int | None,
    broker_port: int,
    bootstrap: str | None,
    eventing: bool | None,
) -> None:
    """Run every function locally with Knative's behaviour, until Ctrl-C.

    Starts the embedded broker, the sources and triggers, and a gateway that routes by
    Host header (<function>.<namespace>.<domain>) or path prefix (/<function>/...),
    holds requests while a function scales from zero, and autoscales each function on
    concurrency (Knative's KPA). Saving a function's file makes a new revision.

    \b
    Example:
      mlfn dev --port 8080
      curl -s localhost:8080/predict/ -d '{"instances": [[0.0, 0.1, ...64 values]]}'
      mlfn status
      mlfn dev --bootstrap kafka.local:9092     # an external Kafka instead
    """
    from localplatform.dev import DevOptions, run

    if bootstrap is not None:
        from eventing.cli import check_bootstrap

        check_bootstrap(bootstrap)
        settings = settings.updated(eventing={"bootstrap_servers": bootstrap})
    from runtime.logs import configure

    configure(settings.common.log_level, settings.common.log_format)
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    options = DevOptions(
        port=settings.platform.port if port is None else port,
        broker_port=broker_port,
        eventing=settings.platform.eventing if eventing is None else eventing,
    )
    code = run(settings, options)
    if code:
        raise SystemExit(code)


COMMANDS: list[click.Command] = [dev]
