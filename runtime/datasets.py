"""The dataset store: durable, append-only, idempotent rows for training.

One SQLite file per dataset (``<root>/<name>.sqlite3``, WAL mode). A committed row
survives the death of any process (SIGKILL, out of memory) with the default
``synchronous=NORMAL``: the commit is in the write-ahead log, which the next open
replays. ``sync="full"`` (``MLFN_DATASET_SYNC=full``) also fsyncs every commit, so that the
last commits survive a power loss or a kernel crash too, at the disk's fsync rate.
Each row is keyed on the id of the CloudEvent that carried it: ``INSERT OR IGNORE``
makes a redelivered event a no-op, so at-least-once delivery never duplicates rows.
Rows get an increasing sequence number, the watermark that retrain policies count from.
Every skipped row is counted, durably, in the same transaction (:meth:`Dataset.duplicates`):
redeliveries are expected (delivery is at-least-once) but should be few, and visible.

Example:
    >>> store = DatasetStore(tmp_path)  # doctest: +SKIP
    >>> ds = store.open("digits")  # doctest: +SKIP
    >>> ds.append([Row("ev-1", [0.0] * 64, 3)])  # doctest: +SKIP
    1
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from runtime import fastjson
from runtime.errors import MlfnError
from runtime.groupcommit import GroupCommit
from runtime.settings import ModelSettings, default_of

__all__ = [
    "DataRange",
    "Dataset",
    "DatasetError",
    "DatasetLike",
    "DatasetStore",
    "DatasetsLike",
    "Row",
    "Sync",
    "TrainingData",
    "check_dataset_name",
]

Sync = Literal["normal", "full"]
"""SQLite's ``synchronous`` for datasets: ``normal`` (crash-safe) or ``full`` (power-loss-safe)."""
_SYNC: Sync = default_of(ModelSettings, "dataset_sync")

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    time     TEXT NOT NULL,
    features TEXT NOT NULL,
    label    TEXT
)
"""
_INSERT = "INSERT OR IGNORE INTO rows (id, time, features, label) VALUES (?, ?, ?, ?)"
_Values = list[tuple[str, str, str, str | None]]
_COUNTERS = "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
_COUNT_DUPLICATES = (
    "INSERT INTO counters (name, value) VALUES ('duplicates', ?) "
    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)


class DatasetError(MlfnError, ValueError):
    """A dataset name or row is invalid."""


class DataRange(BaseModel):
    """The rows a model was trained on: how many, and the first and last by sequence.

    ``first_seq``/``last_seq`` are watermarks in the dataset; the ids are the CloudEvent ids.
    """

    model_config = ConfigDict(frozen=True)

    dataset: str
    rows: int
    first_seq: int
    last_seq: int
    first_id: str
    last_id: str
    first_time: datetime
    last_time: datetime


@dataclass(frozen=True)
class Row:
    """One example: ``id`` is the CloudEvent id (the idempotency key)."""

    id: str
    features: list[float]
    label: Any = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class TrainingData:
    """Rows read for training, as arrays, with their range (None when empty)."""

    X: NDArray[np.float64]
    y: NDArray[Any]
    ids: list[str]
    range: DataRange | None


def check_dataset_name(name: str) -> str:
    """Return ``name`` if it is a valid dataset name; raise :class:`DatasetError` otherwise."""
    if not _NAME.match(name):
        raise DatasetError(
            f"invalid dataset name {name!r}: use lowercase letters, digits, '.', '_', '-'"
        )
    return name


class DatasetLike(Protocol):
    """What the retrain loop needs of a dataset (SQLite :class:`Dataset` or PostgreSQL)."""

    name: str

    def append(self, rows: Iterable[Row]) -> int: ...
    def count(self) -> int: ...
    def count_since(self, watermark: int) -> int: ...
    def watermark(self) -> int: ...
    def read(
        self, after: int = 0, upto: int | None = None, *, labelled_only: bool = True
    ) -> TrainingData: ...


class DatasetsLike(Protocol):
    """A dataset store: :class:`DatasetStore` or ``runtime.stores.PgDatasetStore``."""

    def open(self, name: str) -> DatasetLike: ...
    def close(self) -> None: ...


class Dataset:
    """One dataset; thread-safe (one connection, guarded by a lock; concurrent appends
    are committed together)."""

    def __init__(self, name: str, path: Path, *, sync: Sync = _SYNC) -> None:
        self.name = name
        self.path = path
        self._lock = threading.Lock()
        self._group: GroupCommit[_Values, int] = GroupCommit(
            self._commit, name=f"appends to dataset {name!r}"
        )
        self._counted: tuple[int, int, int] | None = None  # watermark, last seq counted, rows
        self._db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        # Another process (the retrain instance, `mlfn status`) may hold the file: switching
        # the journal mode takes a lock that does not wait, so only a new file switches.
        mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            self._db.execute("PRAGMA journal_mode=WAL")
        if sync not in ("normal", "full"):
            raise DatasetError(f"dataset sync must be 'normal' or 'full', got {sync!r}")
        self._db.execute(f"PRAGMA synchronous={sync.upper()}")
        self._db.execute(_SCHEMA)
        self._db.execute(_COUNTERS)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, rows: Iterable[Row]) -> int:
        """Append rows in one transaction; rows whose id is already stored are skipped.

        Skipped rows are added to :meth:`duplicates` in the same transaction.

        Returns:
            How many rows were new.
        """
        values = []
        for row in rows:
            if not row.id:
                raise DatasetError(
                    f"a row of dataset {self.name!r} has an empty id; use the event id"
                )
            values.append(
                (
                    row.id,
                    row.time.isoformat(),
                    fastjson.dumps_numbers(row.features),
                    None if row.label is None else fastjson.dumps_value(row.label),
                )
            )
        return self._group_commit(values)

    def _group_commit(self, values: _Values) -> int:
        """Commit ``values`` with whatever other threads are appending now: one transaction
        (one fsync) for all of them, and each caller returns only once it is committed
        (:class:`~runtime.groupcommit.GroupCommit`).

        A dispatcher delivers many events at once to a retrain function, one row each: a
        transaction per row would cap ingest at the disk's fsync rate.
        """
        return self._group.submit(values)

    def _commit(self, group: list[_Values]) -> list[int | BaseException]:
        """One transaction for the group; if it fails, each append alone (so that only
        the one whose rows fail gets the error)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                counts: list[int | BaseException] = []
                skipped = 0
                for values in group:
                    before = self._db.total_changes
                    self._db.executemany(_INSERT, values)
                    added = self._db.total_changes - before
                    counts.append(added)
                    skipped += len(values) - added
                if skipped:  # redelivered rows: counted, durably
                    self._db.execute(_COUNT_DUPLICATES, (skipped,))
                self._db.execute("COMMIT")
                return counts
            except BaseException as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if not isinstance(err, Exception):
                    raise
                if len(group) == 1:
                    return [err]
            # one caller's rows failed the group: commit each alone, so only it fails
            return [self._commit_one(values) for values in group]

    def _commit_one(self, values: _Values) -> int | BaseException:
        try:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(_INSERT, values)
                added = self._db.total_changes - before
                if added < len(values):
                    self._db.execute(_COUNT_DUPLICATES, (len(values) - added,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except Exception as err:
            return err
        return added

    def duplicates(self) -> int:
        """Rows skipped so far because their id was stored already (redelivered events)."""
        with self._lock:
            found = self._db.execute(
                "SELECT value FROM counters WHERE name = 'duplicates'"
            ).fetchone()
        return int(found[0]) if found else 0

    def count(self) -> int:
        """Rows stored."""
        return self.count_since(0)

    def count_since(self, watermark: int) -> int:
        """Rows appended after ``watermark`` (a sequence number, e.g. ``DataRange.last_seq``).

        Asked again with the same watermark (the retrain loop does, once per stored row),
        only the rows after the last one counted are counted: SQLite gives sequence
        numbers in commit order and rows are never removed, so the count stays exact,
        rows other processes appended included.
        """
        with self._lock:
            known = self._counted
            if known is not None and known[0] == watermark:
                _, upto, before = known
            else:
                upto, before = watermark, 0
            n, top = self._db.execute(
                "SELECT COUNT(*), MAX(seq) FROM rows WHERE seq > ?", (upto,)
            ).fetchone()
            total = before + int(n)
            self._counted = (watermark, upto if top is None else int(top), total)
        return total

    def watermark(self) -> int:
        """The sequence number of the last row (0 when empty)."""
        with self._lock:
            (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM rows").fetchone()
        return int(seq)

    def read(
        self, after: int = 0, upto: int | None = None, *, labelled_only: bool = True
    ) -> TrainingData:
        """Rows with ``after < seq <= upto`` as arrays, with their :class:`DataRange`."""
        sql = "SELECT seq, id, time, features, label FROM rows WHERE seq > ?"
        args: list[Any] = [after]
        if upto is not None:
            sql += " AND seq <= ?"
            args.append(upto)
        if labelled_only:
            sql += " AND label IS NOT NULL"
        with self._lock:
            found = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        if not found:
            return TrainingData(np.zeros((0, 0)), np.zeros(0), [], None)
        X = self._features([r[3] for r in found])
        y = np.array([None if r[4] is None else fastjson.loads(r[4]) for r in found])
        first, last = found[0], found[-1]
        span = DataRange(
            dataset=self.name,
            rows=len(found),
            first_seq=first[0],
            last_seq=last[0],
            first_id=first[1],
            last_id=last[1],
            first_time=datetime.fromisoformat(first[2]),
            last_time=datetime.fromisoformat(last[2]),
        )
        return TrainingData(X, y, [r[1] for r in found], span)

    def _features(self, texts: list[str]) -> NDArray[np.float64]:
        """The rows' features as one array, parsed row by row into it: a training never
        holds every row as a list of Python floats too (about 4x the array's memory)."""
        first = fastjson.loads(texts[0])
        X = np.empty((len(texts), len(first)), dtype=np.float64)
        X[0] = first
        for i in range(1, len(texts)):
            values = fastjson.loads(texts[i])
            if len(values) != X.shape[1]:
                raise DatasetError(
                    f"dataset {self.name!r}: row {i + 1} of this read has {len(values)} "
                    f"features, the first has {X.shape[1]}; rows of a dataset must agree"
                )
            X[i] = values
        return X


class DatasetStore:
    """Datasets under one directory (default ``settings.dataset_store_path``).

    Args:
        root: the directory.
        sync: ``normal`` (committed rows survive a killed process) or ``full`` (a power
            loss too); ``MLFN_DATASET_SYNC``.
    """

    def __init__(self, root: Path | str, *, sync: Sync = _SYNC) -> None:
        self.root = Path(root)
        self.sync: Sync = sync
        self._open: dict[str, Dataset] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DatasetStore({str(self.root)!r})"

    def open(self, name: str) -> Dataset:
        """The dataset called ``name``, created if missing; one shared object per name."""
        check_dataset_name(name)
        with self._lock:
            ds = self._open.get(name)
            if ds is None:
                self.root.mkdir(parents=True, exist_ok=True)
                path = self.root / f"{name}.sqlite3"
                ds = self._open[name] = Dataset(name, path, sync=self.sync)
            return ds

    def close(self) -> None:
        """Close every dataset opened through this store."""
        with self._lock:
            for ds in self._open.values():
                ds.close()
            self._open.clear()
