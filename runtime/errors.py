"""The runtime's exception tree. Every error says what was found and how to fix it.

MlfnError
├── SpecError (ValueError)         a decorator or spec is invalid
├── DiscoveryError (LookupError)   a function or module cannot be found or imported
├── InvalidEvent (ValueError)      an event's data is invalid: HTTP 400, dead-lettered, no retry
├── ModelStoreError                the model store cannot serve a request
│   ├── ModelNotFoundError (LookupError)
│   └── StoreUnavailableError      the database behind a store is down or unreachable (retry)
└── BatchError                     a batch call failed or returned the wrong number of results
"""

from __future__ import annotations

__all__ = [
    "BatchError",
    "DiscoveryError",
    "InvalidEvent",
    "MlfnError",
    "ModelNotFoundError",
    "ModelStoreError",
    "SpecError",
    "StoreUnavailableError",
]


class MlfnError(Exception):
    """Root of every error mlfn raises on purpose."""


class SpecError(MlfnError, ValueError):
    """A function's spec or signature is invalid."""


class DiscoveryError(MlfnError, LookupError):
    """A function or its module cannot be found or imported."""


class InvalidEvent(MlfnError, ValueError):
    """An event's data is invalid. The server answers 400, so it is dead-lettered, not retried."""


class ModelStoreError(MlfnError):
    """The model store cannot serve the request."""


class ModelNotFoundError(ModelStoreError, LookupError):
    """No such model, or no such version of it."""


class StoreUnavailableError(ModelStoreError):
    """The database behind the model, dataset or retraining store cannot be reached.

    Transient: the server answers 503 (readiness and requests) and retries until it returns.
    """


class BatchError(MlfnError):
    """A batched model call failed, or returned a result list of the wrong length."""
