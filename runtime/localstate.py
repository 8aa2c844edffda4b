"""Where local state lives under ``MLFN_HOME``, and how a running ``mlfn dev`` is found.

The local platform writes its run file (pid, gateway, control API and broker addresses)
when it starts and removes it when it stops; commands in other processes (``mlfn
produce``, ``mlfn status``, an instance announcing a model) read it here. It is the one
contract about local state that several floors share, so it sits at the bottom.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RunFileError", "read_run_file", "run_file", "running_platform"]


class RunFileError(ConnectionError):
    """No local platform is running, or its run file cannot be read; the message says which."""


def run_file(home: Path) -> Path:
    """The run file a running ``mlfn dev`` writes (``<home>/platform/dev.json``)."""
    return home / "platform" / "dev.json"


def read_run_file(home: Path) -> dict[str, Any]:
    """The run file's content, whether or not its process still lives.

    Raises:
        RunFileError: there is none, or it is not JSON.
    """
    path = run_file(home)
    hint = "start it with `make dev` (or `mlfn dev`), or pass --cluster for Knative"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFileError(f"no local platform is running (no {path}); {hint}") from None
    except (OSError, ValueError) as err:
        raise RunFileError(f"cannot read {path}: {err}; {hint}") from err
    if not isinstance(info, dict):
        raise RunFileError(f"{path} is not a JSON object; {hint}")
    return info


def running_platform(home: Path) -> dict[str, Any]:
    """The run file of the ``mlfn dev`` that is running now.

    Raises:
        RunFileError: none runs (no run file, or its process is gone).
    """
    info = read_run_file(home)
    pid = int(info.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise RunFileError(
            f"the local platform that wrote {run_file(home)} (pid {pid}) is gone; "
            "start it with `make dev` (or `mlfn dev`)"
        ) from None
    except PermissionError:
        pass
    return info
