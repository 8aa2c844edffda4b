"""The `mlfn` commands that knative provides. Heavy imports stay inside the commands."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
