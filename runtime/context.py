"""The context an event function may take as its second argument."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from runtime.settings import Settings
from runtime.spec import FunctionSpec

__all__ = ["Context"]


@dataclass
class Context:
    """What the runtime hands a function besides its input.

    Attributes:
        spec: the function's own spec.
        settings: the settings read at start-up.
        logger: a logger whose records carry the request id.
        models: the model store (``runtime.models``).
        datasets: the dataset store (``runtime.datasets``).
    """

    spec: FunctionSpec
    settings: Settings
    logger: logging.Logger
    models: Any = None
    datasets: Any = None
