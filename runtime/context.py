"""The context an event function may take as its second argument."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.settings import RuntimeSettings
from runtime.spec import FunctionSpec

if TYPE_CHECKING:
    from runtime.retraining.emit import EmitterFactory

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
        emitters: where the retraining loop's announcements go (see
            :mod:`runtime.retraining.emit`); None: the runtime's default.
    """

    spec: FunctionSpec
    settings: RuntimeSettings
    logger: logging.Logger
    models: Any = None
    datasets: Any = None
    emitters: EmitterFactory | None = None
