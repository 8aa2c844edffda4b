"""The commands that run or describe one function: serve, invoke, job, list.

They compose the runtime's server with eventing's Kafka emitters (where a retrain
function's announcements go) and with each back end's effective spec (``mlfn list
--backend``), which is why they live in the command line and not in ``runtime``.
Heavy imports (gunicorn, the server, the function package) stay inside the commands.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from mlfn.settings import Settings

if TYPE_CHECKING:
    from runtime.function import Function
    from runtime.spec import FunctionSpec

__all__ = ["COMMANDS"]


def _find(settings: Settings, name: str) -> Function:
    from runtime.errors import DiscoveryError, SpecError
    from runtime.registry import discover

    try:
        return discover(settings.common.functions_package).get(name)
    except (DiscoveryError, SpecError) as err:
        raise click.ClickException(str(err)) from err


@click.command("serve")
@click.argument("function")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    envvar="PORT",
    show_default=True,
    help="TCP port (env PORT, as Knative sets it).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; 0.0.0.0 in a container.",
)
@click.pass_obj
def serve(settings: Settings, function: str, port: int, host: str) -> None:
    """Serve one function over HTTP until SIGTERM (then drain and exit 0).

    Routes: GET /healthz, /readyz, /metrics; inference functions take JSON on POST /
    and the Open Inference Protocol under /v2; event functions take CloudEvents on POST /.

    \b
    Example:
      mlfn serve predict --port 8080
      curl -s localhost:8080/readyz
    """
    from runtime.logs import configure
    from runtime.server.metrics import process_start_time

    started = process_start_time()
    configure(settings.common.log_level, settings.common.log_format, function=function)
    fn = _find(settings, function)
    from eventing.sinks import emitters_for
    from runtime.server import run

    run(fn, settings, port, host, emitters=emitters_for(settings), started_at=started)


def _read_data(data: str) -> Any:
    if data == "-":
        data = sys.stdin.read()
    elif data.startswith("@"):
        try:
            with open(data[1:], encoding="utf-8") as f:
                data = f.read()
        except OSError as err:
            raise click.BadParameter(f"cannot read {data[1:]}: {err}", param_hint="--data") from err
    try:
        return json.loads(data)
    except ValueError as err:
        raise click.BadParameter(f"not valid JSON: {err}", param_hint="--data") from err


def _is_event_here(settings: Settings, name: str) -> bool:
    """Whether ``name`` is an event function, if it can be found locally (else: JSON)."""
    from runtime.registry import discover

    try:
        return discover(settings.common.functions_package).get(name).spec.is_event
    except Exception:
        return False


@click.command("invoke")
@click.argument("function")
@click.option(
    "--data",
    "-d",
    required=True,
    help="JSON request (event data for event functions); @FILE reads a file, - stdin.",
)
@click.option(
    "--url",
    default=None,
    help="Call a running server at this base URL instead of running in-process.",
)
@click.option(
    "--path", default="/", show_default=True, help="Route to call, e.g. /v2/models/predict/infer."
)
@click.option(
    "--type",
    "event_type",
    default="mlfn.invoke",
    show_default=True,
    help="CloudEvent type (event functions).",
)
@click.pass_obj
def invoke(
    settings: Settings, function: str, data: str, url: str | None, path: str, event_type: str
) -> None:
    """Call a function once and print its JSON response (with model_version for inference).

    Without --url it runs the function in this process, through the same dispatch code
    as the server (loading the model first); with --url it POSTs to a running server.

    \b
    Example:
      mlfn invoke predict --data '{"instances": [[0.0, 0.5, ...64 values]]}'
      mlfn invoke predict --url http://127.0.0.1:8080 --data @request.json
    """
    from eventing.sinks import emitters_for
    from runtime.server.invoke import InvokeError, invoke_local, invoke_remote, request_for

    payload = _read_data(data)
    try:
        if url is None:
            fn = _find(settings, function)
            from runtime.logs import configure

            level = (
                "WARNING"
                if settings.common.log_level.upper() == "INFO"
                else settings.common.log_level
            )
            configure(level, settings.common.log_format)
            req = request_for(fn.spec.is_event, payload, path, event_type)
            status, body = invoke_local(fn, settings, req, emitters=emitters_for(settings))
        else:
            req = request_for(_is_event_here(settings, function), payload, path, event_type)
            status, body = invoke_remote(url, req)
    except InvokeError as err:
        raise click.ClickException(str(err)) from err
    click.echo(body)
    if status >= 400:
        raise SystemExit(1)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print every spec as JSON.")
@click.option(
    "--backend",
    type=click.Choice(["spec", "local", "knative"]),
    default="spec",
    show_default=True,
    help="Show the specs as written, or as a back end runs them (its defaults resolved).",
)
@click.pass_obj
def list_(settings: Settings, as_json: bool, backend: str) -> None:
    """List the functions in MLFN_FUNCTIONS_PACKAGE with their specs.

    With --backend local or knative, each spec is shown as that back end runs it: the
    local platform's scaling defaults (MLFN_PLATFORM_*), or Knative's GPU defaults.

    \b
    Example:
      mlfn list
      mlfn list --backend local
      mlfn list --json --backend knative | jq '.[0].scaling'
    """
    from runtime.errors import DiscoveryError, SpecError
    from runtime.registry import discover
    from runtime.server.listing import spec_table

    try:
        registry = discover(settings.common.functions_package)
    except (DiscoveryError, SpecError) as err:
        raise click.ClickException(str(err)) from err
    specs = [effective(fn.spec, settings, backend) for fn in registry]
    if as_json:
        click.echo(json.dumps([s.model_dump(mode="json") for s in specs], indent=2))
    else:
        click.echo(spec_table(specs))


def effective(spec: FunctionSpec, settings: Settings, backend: str) -> FunctionSpec:
    """``spec`` as ``backend`` runs it (``spec``: as written)."""
    if backend == "local":
        from localplatform.effective import effective_spec as local

        return local(spec, settings.platform)
    if backend == "knative":
        from knative.effective import effective_spec as cluster

        return cluster(spec)
    return spec


@click.command("job")
@click.argument("function")
@click.option(
    "--event",
    "event_path",
    default="/etc/jobsink-event/event",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="File holding the CloudEvent in structured JSON (where Knative's JobSink mounts it).",
)
@click.pass_obj
def job(settings: Settings, function: str, event_path: str) -> None:
    """Run an event function once on one CloudEvent, as a JobSink job does, then exit.

    Exits 0 when the function succeeded (its reply event, if any, is printed as JSON) and
    1 otherwise, so Kubernetes retries the Job by its backoffLimit.

    \b
    Example:
      mlfn job retrain --event event.json
    """
    from eventing.sinks import emitters_for
    from runtime import events
    from runtime.logs import configure
    from runtime.server.app import Request
    from runtime.server.invoke import InvokeError, invoke_local

    configure(settings.common.log_level, settings.common.log_format, function=function)
    fn = _find(settings, function)
    if not fn.spec.is_event:
        raise click.UsageError(
            f"{function} is an {fn.spec.kind} function; jobs run event functions"
        )
    try:
        with open(event_path, encoding="utf-8") as f:
            ev = events.event_from_dict(json.load(f))
    except OSError as err:
        raise click.BadParameter(f"cannot read {event_path}: {err}", param_hint="--event") from err
    except ValueError as err:
        raise click.BadParameter(
            f"{event_path} is not a structured CloudEvent: {err}", param_hint="--event"
        ) from err
    msg = events.to_http_binary(ev)
    req = Request("POST", "/", {k.lower(): v for k, v in msg.headers.items()}, msg.body)
    try:
        status, body = invoke_local(fn, settings, req, emitters=emitters_for(settings))
    except InvokeError as err:
        raise click.ClickException(str(err)) from err
    click.echo(body)
    if status >= 400:
        raise SystemExit(1)


COMMANDS: list[click.Command] = [serve, invoke, list_, job]
