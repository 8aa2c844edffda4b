"""The local platform's exception tree (under :class:`runtime.errors.MlfnError`).

PlatformError
├── RolloutError (ValueError)     a traffic move that cannot apply (one revision only, bad %)
└── PlatformRequestError (ValueError)  the running platform refused a control request

``mlfn status`` / ``mlfn rollout`` raise :class:`ConnectionError` (a built-in) when no
``mlfn dev`` is running.
"""

from __future__ import annotations

from runtime.errors import MlfnError

__all__ = ["PlatformError", "PlatformRequestError", "RolloutError"]


class PlatformError(MlfnError):
    """Root of the local platform's errors."""


class RolloutError(PlatformError, ValueError):
    """A rollout move that cannot apply to the function's revisions."""


class PlatformRequestError(PlatformError, ValueError):
    """The running ``mlfn dev`` refused a control request; the message says why."""
