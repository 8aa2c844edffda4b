"""The `mlfn` commands that localplatform provides. Heavy imports stay inside the commands."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
