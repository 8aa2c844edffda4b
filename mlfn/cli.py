"""The ``mlfn`` entry point. Settings are read here, once, and passed down via the click context.

Each package contributes the commands of its own floor (``eventing.cli``, ``knative.cli``,
``localplatform.cli``); the commands that compose several (serve, invoke, job, list,
status, rollout) are this package's own.
"""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from eventing.cli import COMMANDS as EVENTING
from knative.cli import COMMANDS as KNATIVE
from localplatform.cli import COMMANDS as LOCALPLATFORM
from mlfn.function_commands import COMMANDS as FUNCTIONS
from mlfn.platform_commands import COMMANDS as PLATFORM
from mlfn.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mlfn")
@click.pass_context
def root(ctx: click.Context) -> None:
    """mlfn: serverless ML functions on Knative.

    Write preprocessing, inference and retraining as small Python functions in
    functions/; run them locally with `mlfn dev`, deploy them with `mlfn deploy`.
    Settings come from MLFN_* environment variables (docs/settings.md).
    """
    try:
        ctx.obj = Settings()
    except ValidationError as err:
        raise click.UsageError(f"invalid MLFN_* setting: {err}") from err


for command in (*FUNCTIONS, *EVENTING, *LOCALPLATFORM, *KNATIVE, *PLATFORM):
    root.add_command(command)


def main() -> None:
    sys.path.insert(0, "")  # the functions package is found from the current directory
    root(prog_name="mlfn")
