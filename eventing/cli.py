"""The `mlfn` commands that eventing provides. Heavy imports stay inside the commands."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from eventing.graph_cli import graph as graph_cmd
from eventing.settings import EventingRoot
from runtime.localstate import RunFileError, running_platform
from runtime.spec import Delivery, EventBatch, KafkaSource, format_iso_duration

_BOOTSTRAP_HELP = (
    "Kafka HOST:PORT (default: MLFN_BOOTSTRAP_SERVERS, else the broker of a running `mlfn dev`)"
)


def _bootstrap(settings: EventingRoot, given: str | None) -> str:
    server = given or settings.eventing.bootstrap_servers
    if not server:
        server = running_broker(settings.common.home)
    if not server:
        raise click.UsageError(
            "no Kafka to talk to: start the platform with `make dev` (its broker is found "
            "automatically), or run `mlfn broker` and pass its address with "
            "--bootstrap 127.0.0.1:PORT (or set MLFN_BOOTSTRAP_SERVERS)"
        )
    return check_bootstrap(server)


def running_broker(home: Path) -> str | None:
    """The Kafka bootstrap of the running ``mlfn dev`` (its embedded broker), if any."""
    try:
        bootstrap = running_platform(home).get("bootstrap")
    except RunFileError:
        return None
    return str(bootstrap) if bootstrap else None


def check_bootstrap(server: str) -> str:
    """``server`` if it is ``HOST:PORT``; a usage error naming --bootstrap otherwise."""
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{server!r} is not HOST:PORT", param_hint="--bootstrap")
    return server


def _default(model: type[BaseModel], name: str) -> Any:
    """A spec field's declared default, for help texts that must not repeat it."""
    return model.model_fields[name].get_default(call_default_factory=True)


def _given(**values: Any) -> dict[str, Any]:
    """The options the user gave; the spec's defaults apply to the rest."""
    return {k: v for k, v in values.items() if v is not None}


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


@click.command("broker")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="loopback port; 0 picks a free one",
)
@click.pass_obj
def broker_cmd(settings: EventingRoot, port: int) -> None:
    """Run the embedded Kafka broker (Tansu, in memory) in the foreground.

    Prints the bootstrap address; stops on Ctrl-C or SIGTERM. Topics are created as
    needed by mlfn with MLFN_PARTITIONS partitions.

    Example:

        $ mlfn broker --port 9092
        bootstrap: 127.0.0.1:9092
    """
    from eventing.broker import EmbeddedBroker
    from eventing.errors import BrokerError

    broker = EmbeddedBroker(port)
    try:
        broker.start()
    except BrokerError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"bootstrap: {broker.bootstrap}", nl=True)
    click.echo(f"  export MLFN_BOOTSTRAP_SERVERS={broker.bootstrap}", err=True)
    try:
        _wait_for_signal()
    finally:
        broker.stop()
        click.echo("broker stopped", err=True)


@click.command("produce")
@click.option("--topic", help="topic to post to (default: the example pipeline's raw topic)")
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON lines file (default: stdin)",
)
@click.option("--dataset", type=click.Choice(["digits"]), help="post scikit-learn's digits")
@click.option(
    "--count", type=click.IntRange(min=1), help="records from --dataset (cycles; default 1797)"
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="records per second (default: as fast as possible)",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "binary", "structured"]),
    default="json",
    show_default=True,
    help="plain JSON, or a CloudEvent in binary or structured mode",
)
@click.option("--type", "ce_type", default="mlfn.record", show_default=True, help="CloudEvent type")
@click.option(
    "--source", "ce_source", default="/mlfn/produce", show_default=True, help="CloudEvent source"
)
@click.option("--key", help="record key for every record (partitioning)")
@click.option("--key-field", help="take each record's key from this JSON field")
@click.option("--bootstrap", help=_BOOTSTRAP_HELP)
@click.pass_obj
def produce_cmd(
    settings: EventingRoot,
    topic: str | None,
    file: Path | None,
    dataset: str | None,
    count: int | None,
    rate: float | None,
    fmt: str,
    ce_type: str,
    ce_source: str,
    key: str | None,
    key_field: str | None,
    bootstrap: str | None,
) -> None:
    """Post records to a topic: JSON lines (stdin or --file) or the digits dataset.

    Records are plain JSON (content-type application/json), or CloudEvents in the Kafka
    binding with --format binary|structured.

    Examples:

        $ mlfn produce --dataset digits --count 5000 --rate 200
        $ echo '{"x": 1}' | mlfn produce --topic t --format binary --type demo.x
    """
    from eventing.errors import KafkaUnavailableError
    from eventing.producer import EventProducer, default_topic, digits_records, read_json_lines

    server = _bootstrap(settings, bootstrap)
    if dataset and file:
        raise click.UsageError("give --dataset or --file, not both")
    if count and not dataset:
        raise click.UsageError("--count applies to --dataset only")
    topic = topic or default_topic(settings.common.functions_package)
    if dataset:
        values: Any = digits_records(count)
        total: int | None = count or 1797
    else:
        stream = file.open() if file else sys.stdin
        values = read_json_lines(stream, where=str(file) if file else "stdin")
        total = None

    def key_of(v: Any) -> str | None:
        if key_field is None:
            return key
        if not isinstance(v, dict) or key_field not in v:
            raise click.ClickException(
                f"--key-field {key_field!r}: record has no such field: {str(v)[:80]}"
            )
        return str(v[key_field])

    def progress(n: int) -> None:
        click.echo(f"  {n}{f'/{total}' if total else ''} records", err=True)

    click.echo(f"producing to {topic} at {server} ({fmt})", err=True)
    try:
        with EventProducer(server, partitions=settings.eventing.partitions) as p:
            n = p.stream(
                topic,
                values,
                rate=rate,
                key_of=key_of,
                progress=progress,
                format=fmt,
                type=ce_type,
                source=ce_source,
            )
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    except KafkaUnavailableError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"sent {n} records to {topic}")


@click.command("dispatch")
@click.option(
    "--topic", "topics", multiple=True, required=True, help="topic to consume (repeatable)"
)
@click.option("--sink", required=True, help="URL that receives the CloudEvents")
@click.option("--group", help="consumer group (default: mlfn-dispatch-<first topic>)")
@click.option("--name", default="dispatch", show_default=True, help="source name in wrapped events")
@click.option(
    "--ordering",
    type=click.Choice(["ordered", "unordered"]),
    help=f"delivery order (default {_default(KafkaSource, 'ordering')})",
)
@click.option(
    "--retry",
    type=click.IntRange(0, 1000),
    help=f"retries after the first attempt (default {_default(Delivery, 'retry')})",
)
@click.option(
    "--backoff-policy",
    type=click.Choice(["linear", "exponential"]),
    help=f"default {_default(Delivery, 'backoff_policy')}",
)
@click.option(
    "--backoff-delay",
    help=f"ISO-8601 duration (default {format_iso_duration(_default(Delivery, 'backoff_delay'))})",
)
@click.option(
    "--timeout",
    help=f"per-attempt timeout, ISO-8601 (default {format_iso_duration(_default(Delivery, 'timeout'))})",
)
@click.option("--dead-letter", help="dead-letter sink: http(s) URL or topic")
@click.option("--batch", type=click.IntRange(1, 10_000), help="deliver batches of up to N events")
@click.option(
    "--batch-wait-ms",
    type=click.FloatRange(0),
    help=f"batch deadline (default {_default(EventBatch, 'max_wait_ms'):g})",
)
@click.option("--reply-topic", help="topic for reply events (default: none, replies dropped)")
@click.option(
    "--initial-offset",
    type=click.Choice(["earliest", "latest"]),
    help=f"where a new group starts (default {_default(KafkaSource, 'initial_offset')})",
)
@click.option("--bootstrap", help=_BOOTSTRAP_HELP)
@click.pass_obj
def dispatch_cmd(
    settings: EventingRoot,
    topics: tuple[str, ...],
    sink: str,
    group: str | None,
    name: str,
    ordering: str | None,
    retry: int | None,
    backoff_policy: str | None,
    backoff_delay: str | None,
    timeout: str | None,
    dead_letter: str | None,
    batch: int | None,
    batch_wait_ms: float | None,
    reply_topic: str | None,
    initial_offset: str | None,
    bootstrap: str | None,
) -> None:
    """Run one KafkaSource-style dispatcher in the foreground (Ctrl-C stops it).

    Records become binary-mode CloudEvents POSTed to --sink, with Knative's retry,
    backoff and dead-letter semantics; offsets are committed only after delivery.

    Example:

        $ mlfn dispatch --topic digits.raw --sink http://127.0.0.1:8080/ --retry 5 \\
            --backoff-delay PT0.5S --dead-letter digits.dlq
    """
    from pydantic import ValidationError

    from eventing.dispatcher import Dispatcher, DispatcherConfig
    from eventing.errors import KafkaUnavailableError
    from runtime.logs import configure

    server = _bootstrap(settings, bootstrap)
    configure(
        settings.common.log_level,
        settings.common.log_format,
        no_colour=settings.common.no_color,
    )
    if not sink.startswith(("http://", "https://")):
        raise click.BadParameter(f"{sink!r} is not an http(s) URL", param_hint="--sink")
    try:
        delivery = Delivery(
            **_given(
                retry=retry,
                backoff_policy=backoff_policy,
                backoff_delay=backoff_delay,
                timeout=timeout,
                dead_letter_sink=dead_letter,
            )
        )
        ebatch = (
            EventBatch(**_given(max_events=batch, max_wait_ms=batch_wait_ms)) if batch else None
        )
        source = KafkaSource(
            topics=topics, **_given(ordering=ordering, initial_offset=initial_offset)
        )
    except ValidationError as err:
        raise click.UsageError(f"invalid delivery option: {err}") from err
    cfg = DispatcherConfig(
        name=name,
        topics=topics,
        group=group or f"mlfn-dispatch-{topics[0]}",
        sink=sink,
        namespace=settings.common.namespace,
        ordering=source.ordering,
        delivery=delivery,
        batch=ebatch,
        initial_offset=source.initial_offset,
        reply_topic=reply_topic,
        max_in_flight=settings.eventing.max_in_flight,
        max_record_bytes=settings.eventing.max_record_bytes,
        workers=settings.eventing.dispatch_workers,
        session_timeout_ms=settings.eventing.session_timeout_ms,
        fetch_wait_ms=settings.eventing.fetch_wait_ms,
        idle_fetch_wait_ms=settings.eventing.idle_fetch_wait_ms,
    )
    from eventing._kafka import ensure_topics

    try:
        ensure_topics(server, topics, settings.eventing.partitions)
        d = Dispatcher(cfg, server).start()
    except KafkaUnavailableError as err:
        raise click.ClickException(str(err)) from err
    click.echo(
        f"dispatching {', '.join(topics)} -> {sink} (group {cfg.group}, {ordering})", err=True
    )
    try:
        _wait_for_signal()
    finally:
        d.stop()
        s = d.stats.snapshot()
        click.echo(" ".join(f"{k}={v}" for k, v in s.counters.items()), err=True)


COMMANDS: list[click.Command] = [broker_cmd, produce_cmd, dispatch_cmd, graph_cmd]
