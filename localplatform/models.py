"""Model versions as revisions: what ``mlfn dev`` reads from the model store.

Knative makes a new revision for every change of a Service's template; the local
platform treats a new model version the same way. Every revision of an inference
function with a model is *pinned* to one version (its instances run with
``settings.models.model_version``), so a revision always serves the model it was created for.
:class:`ModelPointers` reads the store's ``latest`` pointer (a few bytes, as
:class:`~runtime.models.ModelHandle` polls it) for the serving layer's watch loop, and moves
it back when a rollout leaves it naming a version that serves no traffic.

The store is imported on first use: functions without a model cost nothing here.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING

from localplatform.settings import LocalRoot

if TYPE_CHECKING:
    from runtime.models.store import ModelStore

__all__ = ["ModelPointers"]

log = logging.getLogger(__name__)


class ModelPointers:
    """The ``latest`` pointers of the model store that ``settings`` names."""

    def __init__(self, settings: LocalRoot) -> None:
        self.settings = settings
        self._store: ModelStore | None = None

    @property
    def store(self) -> ModelStore:
        if self._store is None:
            from runtime.models.store import LocalModelStore

            self._store = LocalModelStore(self.settings.model_store_path)
        return self._store

    def token(self, model: str) -> Hashable | None:
        """A value that changes whenever ``latest`` moves (None: no version yet)."""
        return self.store.latest_token(model)

    def latest(self, model: str) -> int | None:
        """The version ``latest`` names; None when there is none or it cannot be read."""
        from runtime.errors import ModelNotFoundError, ModelStoreError

        try:
            return self.store.latest(model)
        except ModelNotFoundError:
            return None
        except ModelStoreError as err:
            log.warning("model %s: cannot read its latest pointer: %s", model, err)
            return None

    def set_latest(self, model: str, version: int) -> bool:
        """Point ``latest`` at ``version``; False (logged) if the store refuses."""
        from runtime.errors import MlfnError

        try:
            self.store.set_latest(model, version)
        except (MlfnError, OSError) as err:
            log.error("model %s: cannot point latest back at v%d: %s", model, version, err)
            return False
        return True
