"""Stores chosen by the settings: one code path for the local default and PostgreSQL.

:func:`open_stores` gives the process's :class:`Stores` for its settings, created once and
shared (one connection pool per database URL):

- ``MLFN_DATABASE_URL`` unset (``mlfn dev``, tests): the model directory
  (:class:`~runtime.models.store.LocalModelStore`), SQLite datasets
  (:class:`~runtime.datasets.DatasetStore`) and JSON retraining state under ``HOME``.
- ``MLFN_DATABASE_URL=postgresql://...`` (a cluster): the model registry, the datasets and
  the retraining state in PostgreSQL, shared by every replica
  (:class:`PgModelStore`, :class:`PgDatasetStore`, :class:`PgRetrainState`);
  ``MLFN_ARTIFACT_URL=s3://...`` puts the model files in an object store.

Example:
    >>> stores = open_stores(RuntimeSettings())  # doctest: +SKIP
    >>> stores.models.latest("digits")  # doctest: +SKIP
    3
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.datasets import DatasetsLike, DatasetStore
from runtime.models.store import LocalModelStore, ModelStore
from runtime.settings import RuntimeSettings
from runtime.stores.retrain_state import (
    LocalRetrainState,
    PgRetrainState,
    RetrainRecord,
    RetrainState,
)

if TYPE_CHECKING:
    from runtime.stores.database import Database

__all__ = [
    "RetrainRecord",
    "RetrainState",
    "Stores",
    "close_all",
    "open_stores",
]


@dataclass(frozen=True)
class Stores:
    """The stores of one process: models, datasets, retraining state (and their database)."""

    models: ModelStore
    datasets: DatasetsLike
    retrain: RetrainState
    database: Database | None = None

    def check(self) -> None:
        """Raise ``StoreUnavailableError`` when the database behind the stores is down."""
        if self.database is not None:
            self.database.ping()


_OPEN: dict[tuple[str, ...], Stores] = {}
_LOCK = threading.Lock()


def _key(settings: RuntimeSettings) -> tuple[str, ...]:
    # the pid: a forked child (a zygote's instance) opens its own pool, never its parent's
    models = settings.models
    if models.database_url:
        artifacts = (models.artifact_url or "", models.artifact_endpoint_url or "")
        return (str(os.getpid()), "pg", models.database_url, *artifacts)
    return (
        str(os.getpid()),
        "local",
        str(settings.model_store_path),
        str(settings.dataset_store_path),
        str(settings.common.home),
    )


def open_stores(settings: RuntimeSettings) -> Stores:
    """The stores ``settings`` name, opened on first use and shared by the process."""
    key = _key(settings)
    with _LOCK:
        stores = _OPEN.get(key)
        if stores is None:
            stores = _OPEN[key] = _open(settings)
        return stores


def _open(settings: RuntimeSettings) -> Stores:
    url = settings.models.database_url
    if settings.models.artifact_url and not url:
        raise ValueError(
            "MLFN_ARTIFACT_URL needs MLFN_DATABASE_URL: the object store holds the files, the "
            "registry in PostgreSQL their versions and the pointer; set both or neither"
        )
    if url:
        from runtime.stores.database import Database
        from runtime.stores.pg_datasets import PgDatasetStore
        from runtime.stores.pg_models import PgModelStore

        artifacts = None
        if settings.models.artifact_url:
            from runtime.stores.s3_artifacts import S3Artifacts

            artifacts = S3Artifacts(
                settings.models.artifact_url, endpoint_url=settings.models.artifact_endpoint_url
            )
        db = Database(url, pool_size=settings.models.database_pool_size)
        return Stores(PgModelStore(db, artifacts), PgDatasetStore(db), PgRetrainState(db), db)
    return Stores(
        LocalModelStore(settings.model_store_path),
        DatasetStore(settings.dataset_store_path, sync=settings.models.dataset_sync),
        LocalRetrainState(settings.common.home / "retrain"),
    )


def close_all() -> None:
    """Close every store :func:`open_stores` opened (tests, shutdown)."""
    with _LOCK:
        opened = list(_OPEN.values())
        _OPEN.clear()
    for stores in opened:
        stores.datasets.close()
        if stores.database is not None:
            stores.database.close()
