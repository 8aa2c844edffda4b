"""Datasets in PostgreSQL: the same append-only, idempotent rows as the SQLite store.

All datasets share ``mlfn_dataset_rows``, keyed on ``(dataset, id)`` (the CloudEvent id):
a redelivered event adds no row (``ON CONFLICT DO NOTHING``). Sequence numbers come from
an identity column: increasing, with gaps. Appends take no lock, so concurrent
deliveries commit together (PostgreSQL's group commit: one WAL flush for many). A row may
commit after a row with a higher number; every training reads every row, so such a row
is trained on by the next training, and at worst a pending count is short by the rows
in flight at that moment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from runtime.datasets import DataRange, DatasetError, Row, TrainingData, check_dataset_name
from runtime.stores.database import Database

__all__ = ["PgDataset", "PgDatasetStore"]

_CHUNK = 500
"""Rows per ``INSERT`` statement."""


def _float_array(values: Iterable[float]) -> str:
    """A ``double precision[]`` literal: psycopg's list dumper, in Python, cost more per
    row than the rest of an append of a batch."""
    out = []
    for v in values:
        f = float(v)
        out.append(repr(f) if math.isfinite(f) else _NON_FINITE[str(f)])
    return "{" + ",".join(out) + "}"


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


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
        ordered = sorted(fresh.values(), key=lambda r: r.id)  # one lock order: no deadlock
        chunks = [ordered[i : i + _CHUNK] for i in range(0, len(ordered), _CHUNK)]
        opener = self.db.statement if len(chunks) == 1 else self.db.connection
        added = 0
        with opener() as conn:
            for chunk in chunks:  # one statement per chunk: one round trip, atomic
                args: list[Any] = []
                for row in chunk:
                    label = None if row.label is None else Jsonb(row.label)
                    args += [self.name, row.id, row.time, _float_array(row.features), label]
                cur = conn.execute(
                    "INSERT INTO mlfn_dataset_rows (dataset, id, time, features, label) VALUES "
                    + ", ".join(["(%s, %s, %s, %s::double precision[], %s)"] * len(chunk))
                    + " ON CONFLICT (dataset, id) DO NOTHING",
                    args,
                )
                added += max(0, cur.rowcount)
        return added

    def count(self) -> int:
        """Rows stored."""
        return self.count_since(0)

    def count_since(self, watermark: int) -> int:
        """Rows appended after ``watermark`` (a sequence number, e.g. ``DataRange.last_seq``)."""
        with self.db.statement() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM mlfn_dataset_rows WHERE dataset = %s AND seq > %s",
                (self.name, watermark),
            ).fetchone()
        return int(row[0]) if row else 0

    def watermark(self) -> int:
        """The sequence number of the last row (0 when empty)."""
        with self.db.statement() as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM mlfn_dataset_rows WHERE dataset = %s",
                (self.name,),
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
        with self.db.statement() as conn:
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
