"""The ``mlfn`` entry point. Settings are read here, once, and passed down via the click context."""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from runtime.settings import Settings

_PACKAGES = ("runtime", "eventing", "knative", "localplatform")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mlfn")
@click.pass_context
def root(ctx: click.Context) -> None:
    """mlfn: serverless ML functions on Knative.

    Write preprocessing, inference and retraining as small Python functions in
    functions/; run them locally with `mlfn dev`, deploy them with `mlfn deploy`.
    Settings come from MLFN_* environment variables (see README).
    """
    try:
        ctx.obj = Settings()
    except ValidationError as err:
        raise click.UsageError(f"invalid MLFN_* setting: {err}") from err


def _register() -> None:
    import importlib

    for package in _PACKAGES:
        module = importlib.import_module(f"{package}.cli")
        for command in module.COMMANDS:
            root.add_command(command)


_register()


def main() -> None:
    sys.path.insert(0, "")  # the functions package is found from the current directory
    root(prog_name="mlfn")
