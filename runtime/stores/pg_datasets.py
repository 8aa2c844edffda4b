"""Datasets in PostgreSQL: the same append-only, idempotent rows as the SQLite store.

All datasets share ``mlfn_dataset_rows``, keyed on ``(dataset, id)`` (the CloudEvent id):
a redelivered event adds no row. Appends to one dataset take its ``mlfn_datasets`` row
lock, allocate sequence numbers after ``last_seq`` and commit in that order, so sequence
order is commit order: a watermark never skips a row that commits late.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from runtime.datasets import DataRange, DatasetError, Row, TrainingData, check_dataset_name
from runtime.stores.database import Database

__all__ = ["PgDataset", "PgDatasetStore"]


class PgDataset:
    """One dataset in PostgreSQL; thread-safe (each call takes a pooled connection)."""

    def __init__(self, name: str, db: Database) -> None:
        self.name = name
        self.db = db

    def __repr__(self) -> str:
        return f"PgDataset({self.name!r}, {self.db.where!r})"

    def close(self) -> None:
        """Nothing to close: the connections belong to the process's database pool."""

    def append(self, rows: Iterable[Row]) -> int:
        """Append rows in one transaction; rows whose id is already stored are skipped.

        Returns:
            How many rows were new.
        """
        fresh: dict[str, Row] = {}
        for row in rows:
            if not row.id:
                raise DatasetError(
                    f"a row of dataset {self.name!r} has an empty id; use the event id"
                )
            fresh.setdefault(row.id, row)
        if not fresh:
            return 0
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO mlfn_datasets (name) VALUES (%s) ON CONFLICT DO NOTHING", (self.name,)
            )
            found = conn.execute(
                "SELECT last_seq FROM mlfn_datasets WHERE name = %s FOR UPDATE", (self.name,)
            ).fetchone()
            assert found is not None
            last = int(found[0])
            stored = conn.execute(
                "SELECT id FROM mlfn_dataset_rows WHERE dataset = %s AND id = ANY(%s)",
                (self.name, list(fresh)),
            ).fetchall()
            for (rid,) in stored:
                fresh.pop(rid, None)
            if not fresh:
                return 0
            values = [
                (
                    self.name,
                    last + i,
                    row.id,
                    row.time,
                    [float(v) for v in row.features],
                    None if row.label is None else Jsonb(row.label),
                )
                for i, row in enumerate(fresh.values(), start=1)
            ]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO mlfn_dataset_rows (dataset, seq, id, time, features, label) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    values,
                )
            conn.execute(
                "UPDATE mlfn_datasets SET last_seq = %s WHERE name = %s",
                (last + len(values), self.name),
            )
        return len(values)

    def count(self) -> int:
        """Rows stored."""
        return self.count_since(0)

    def count_since(self, watermark: int) -> int:
        """Rows appended after ``watermark`` (a sequence number, e.g. ``DataRange.last_seq``)."""
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM mlfn_dataset_rows WHERE dataset = %s AND seq > %s",
                (self.name, watermark),
            ).fetchone()
        return int(row[0]) if row else 0

    def watermark(self) -> int:
        """The sequence number of the last row (0 when empty)."""
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT last_seq FROM mlfn_datasets WHERE name = %s", (self.name,)
            ).fetchone()
        return int(row[0]) if row else 0

    def read(
        self, after: int = 0, upto: int | None = None, *, labelled_only: bool = True
    ) -> TrainingData:
        """Rows with ``after < seq <= upto`` as arrays, with their :class:`DataRange`."""
        sql = (
            "SELECT seq, id, time, features, label FROM mlfn_dataset_rows "
            "WHERE dataset = %s AND seq > %s"
        )
        args: list[Any] = [self.name, after]
        if upto is not None:
            sql += " AND seq <= %s"
            args.append(upto)
        if labelled_only:
            sql += " AND label IS NOT NULL"
        with self.db.connection() as conn:
            found = conn.execute(sql + " ORDER BY seq", args).fetchall()
        if not found:
            return TrainingData(np.zeros((0, 0)), np.zeros(0), [], None)
        X = np.array([r[3] for r in found], dtype=np.float64)
        y = np.array([r[4] for r in found])
        first, last = found[0], found[-1]
        span = DataRange(
            dataset=self.name,
            rows=len(found),
            first_seq=first[0],
            last_seq=last[0],
            first_id=first[1],
            last_id=last[1],
            first_time=first[2],
            last_time=last[2],
        )
        return TrainingData(X, y, [r[1] for r in found], span)


class PgDatasetStore:
    """Datasets in one PostgreSQL database (``MLFN_DATABASE_URL``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._open: dict[str, PgDataset] = {}

    def __repr__(self) -> str:
        return f"PgDatasetStore({self.db.where!r})"

    def open(self, name: str) -> PgDataset:
        """The dataset called ``name`` (created by its first append)."""
        check_dataset_name(name)
        return self._open.setdefault(name, PgDataset(name, self.db))

    def close(self) -> None:
        """Nothing to close: the pool belongs to :func:`runtime.stores.open_stores`."""
        self._open.clear()
