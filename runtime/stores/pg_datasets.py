"""Datasets in PostgreSQL: the same append-only, idempotent rows as the SQLite store.

All datasets share ``mlfn_dataset_rows``, keyed on ``(dataset, id)`` (the CloudEvent id):
a redelivered event adds no row (``ON CONFLICT DO NOTHING``). Sequence numbers come from
an identity column: increasing, with gaps. A row may commit after a row with a higher
number; every training reads every row, so such a row is trained on by the next
training, and at worst a pending count is short by the rows in flight at that moment.

Appends of concurrent callers (a retrain function gets many deliveries at once, one row
each) are committed together (:class:`~runtime.groupcommit.GroupCommit`): one statement,
one round trip and one WAL flush for the whole group, each caller answered once it is
committed. The statement is always the same text (prepared by the server after a few
uses): the group's rows travel as arrays, the features of every row as one binary
``double precision[]`` that each row slices its own part of; no float is formatted as text.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import psycopg
from numpy.typing import NDArray
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format
from psycopg.types.json import set_json_loads

from runtime import fastjson
from runtime.datasets import DataRange, DatasetError, Row, TrainingData, check_dataset_name
from runtime.errors import StoreUnavailableError
from runtime.groupcommit import GroupCommit
from runtime.stores.database import Database

__all__ = ["PgDataset", "PgDatasetStore"]

_CHUNK = 2000
"""Rows per ``INSERT`` statement (a larger group is several, in one transaction)."""

_INSERT = (
    "INSERT INTO mlfn_dataset_rows (dataset, id, time, features, label) "
    "SELECT %s, u.id, u.time, (%s::double precision[])[u.lo:u.hi], NULLIF(u.label, 'null') "
    "FROM json_to_recordset(%s::json) "
    "AS u(id text, time timestamptz, lo int, hi int, label jsonb) "
    "ON CONFLICT (dataset, id) DO NOTHING RETURNING id"
)
"""The rows of a group as one JSON text (parsed by the server, not dumped field by field
by psycopg), their features as one binary array that each row slices."""
_BUMP = (
    "INSERT INTO mlfn_dataset_counts (dataset, rows) {rows} "
    "ON CONFLICT (dataset) DO UPDATE SET rows = mlfn_dataset_counts.rows + EXCLUDED.rows"
)
"""Add a group's new rows to the dataset's count (``mlfn_dataset_counts``)."""


def _counted(insert: str) -> str:
    """``insert`` (which returns the new rows' ids) and the count's update, one statement:
    the count moves in the same transaction as the rows, in the same round trip."""
    bump = _BUMP.format(rows="SELECT %s, COUNT(*) FROM new HAVING COUNT(*) > 0")
    return f"WITH new AS ({insert}), counted AS ({bump}) SELECT id FROM new"


_FEW = 4
"""Fewer rows than this go as ``VALUES`` (one statement text per count, few of them):
psycopg dumps lists in Python, which costs more than the rows of a small group."""
_COLUMNS = "INSERT INTO mlfn_dataset_rows (dataset, id, time, features, label) VALUES "
_ROW = "(%s, %s, %s, %s, %s::jsonb)"
_CONFLICT = " ON CONFLICT (dataset, id) DO NOTHING RETURNING id"
_VALUES = [_COLUMNS + ", ".join([_ROW] * n) + _CONFLICT for n in range(_FEW)]
_COUNTED_INSERT = _counted(_INSERT)
_COUNTED_VALUES = [_counted(v) for v in _VALUES]
_CELL = np.dtype([("len", ">i4"), ("value", ">f8")])
"""One element of a binary ``double precision[]``: its length (8), then the value."""
_FLOAT8 = 701  # the element type's oid


class _Floats:
    """Features of many rows, end to end, sent as one binary ``double precision[]``."""

    __slots__ = ("cells", "n")

    def __init__(self, values: NDArray[np.float64]) -> None:
        cells = np.empty(len(values), dtype=_CELL)
        cells["len"] = 8
        cells["value"] = values
        self.n: int = len(values)
        self.cells: bytes = cells.tobytes()


class _FloatsDumper(Dumper):
    """PostgreSQL's binary array format: dimensions, no nulls, element type, size, lower
    bound 1, then the cells."""

    format = Format.BINARY
    oid = 1022  # double precision[]

    def dump(self, obj: _Floats) -> Buffer:
        return struct.pack(">iiiii", 1, 0, _FLOAT8, obj.n, 1) + obj.cells


def _records_json(chunk: Sequence[_Prepared]) -> str:
    """The rows of a group as one JSON text, each with its slice ``lo:hi`` of the group's
    features: orjson (times in RFC 3339, as ``isoformat`` writes them; each label its
    checked JSON text), or the stdlib where orjson refuses a value (an id with a lone
    surrogate, which the stdlib escapes)."""
    records: list[dict[str, Any]] = []
    hi = 0
    for r in chunk:
        lo, hi = hi + 1, hi + len(r.features)
        label = None if r.label_json is None else orjson.Fragment(r.label_json)
        records.append({"id": r.id, "time": r.time, "lo": lo, "hi": hi, "label": label})
    try:
        return orjson.dumps(records).decode()
    except orjson.JSONEncodeError:
        plain = [
            rec | {"time": r.time.isoformat(), "label": r.label}
            for rec, r in zip(records, chunk, strict=True)
        ]
        return json.dumps(plain)


def _label_of(text: str | bytes) -> Any:
    """A stored label (``jsonb``, as PostgreSQL writes it: an integer is its digits)."""
    data = bytes(text, "utf-8") if isinstance(text, str) else bytes(text)
    if data.isdigit() or (data[:1] == b"-" and data[1:].isdigit()):
        return int(data)
    return fastjson.loads(data)


def _floats_of(sent: bytes) -> NDArray[np.float64]:
    """A ``double precision[]`` from its binary form (``array_send``): read as one array,
    not parsed from text float by float."""
    ndim, nulls = struct.unpack_from(">ii", sent)
    if ndim == 0:
        return np.zeros(0)
    if ndim != 1 or nulls:
        raise DatasetError("a stored row's features are not a flat array of numbers")
    return np.frombuffer(sent, dtype=_CELL, offset=20)["value"].astype(np.float64)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One row, checked and converted by its caller before it joins a group."""

    id: str
    time: datetime
    features: NDArray[np.float64]  # 1-D
    label: Any  # JSON-able (checked)
    label_json: str | None


_TOTAL = "SELECT COALESCE((SELECT rows FROM mlfn_dataset_counts WHERE dataset = %s), 0)"
_UPTO = "(SELECT COUNT(*) FROM mlfn_dataset_rows WHERE dataset = %s AND seq <= %s)"


class PgDataset:
    """One dataset in PostgreSQL; thread-safe (concurrent appends commit together)."""

    def __init__(self, name: str, db: Database) -> None:
        self.name = name
        self.db = db
        self._group: GroupCommit[list[_Prepared], int] = GroupCommit(
            self._commit, name=f"appends to dataset {name!r}"
        )
        self._upto: tuple[int, int] | None = None  # a watermark, the rows up to it

    def __repr__(self) -> str:
        return f"PgDataset({self.name!r}, {self.db.where!r})"

    def close(self) -> None:
        """Nothing to close: the connections belong to the process's database pool."""

    def append(self, rows: Iterable[Row]) -> int:
        """Append rows in one transaction; rows whose id is already stored are skipped.

        Concurrent callers share the transaction (a group commit); each returns once it
        is committed. A group that fails fails every caller in it (the database is down:
        :class:`~runtime.errors.StoreUnavailableError`, retry), except that a row the
        database refuses fails only the call that brought it.

        Returns:
            How many rows were new (a row that another caller of the same group also
            brought counts for the first of them).

        Raises:
            DatasetError: a row has no id, features that are not numbers, or a label that
                is not JSON.
            StoreUnavailableError: the database is unreachable; nothing of this call is
                stored twice when it is retried.
        """
        fresh: dict[str, _Prepared] = {}
        for row in rows:
            if row.id not in fresh:
                fresh[row.id] = self._prepared(row)
        if not fresh:
            return 0
        return self._group.submit(list(fresh.values()))

    def _prepared(self, row: Row) -> _Prepared:
        if not row.id:
            raise DatasetError(f"a row of dataset {self.name!r} has an empty id; use the event id")
        try:
            features = np.asarray(row.features, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DatasetError(
                f"row {row.id!r} of dataset {self.name!r}: features must be a list of "
                f"numbers ({err})"
            ) from None
        if features.ndim != 1:
            raise DatasetError(
                f"row {row.id!r} of dataset {self.name!r}: features must be a flat list of "
                f"numbers, got an array of shape {features.shape}"
            )
        try:
            label = None if row.label is None else fastjson.dumps_value(row.label, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise DatasetError(
                f"row {row.id!r} of dataset {self.name!r}: the label must be JSON ({err})"
            ) from None
        return _Prepared(row.id, row.time, features, row.label, label)

    def _commit(self, group: list[list[_Prepared]]) -> list[int | BaseException]:
        """Store a group's rows in one transaction; how many were new, per caller."""
        owner: dict[str, int] = {}  # a row id -> the first caller that brought it
        rows: list[_Prepared] = []
        for k, mine in enumerate(group):
            for r in mine:
                if r.id not in owner:
                    owner[r.id] = k
                    rows.append(r)
        rows.sort(key=lambda r: r.id)  # one lock order for every writer: no deadlock
        try:
            stored = self._insert(rows)
        except StoreUnavailableError:
            raise  # the database is down: every caller of the group retries
        except psycopg.Error as err:
            if len(group) == 1:
                return [self._refused(err)]
            # a row the database refuses: each caller alone, so that only its caller fails
            return [self._commit_alone(mine) for mine in group]
        counts: list[int | BaseException] = [0] * len(group)
        for row_id in stored:
            counts[owner[row_id]] += 1  # type: ignore[operator]
        return counts

    def _commit_alone(self, mine: list[_Prepared]) -> int | BaseException:
        try:
            return len(self._insert(sorted(mine, key=lambda r: r.id)))
        except StoreUnavailableError as err:
            return err
        except psycopg.Error as err:
            return self._refused(err)

    def _refused(self, err: psycopg.Error) -> DatasetError:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        refused = DatasetError(
            f"the database refused a row of dataset {self.name!r}: {detail}; fix the row "
            "(its features and label) and send it again"
        )
        refused.__cause__ = err
        return refused

    def _insert(self, rows: Sequence[_Prepared]) -> list[str]:
        """Insert ``rows`` (ids unique, sorted) in one transaction and count the new ones
        in ``mlfn_dataset_counts``; the ids that were new."""
        chunks = [rows[i : i + _CHUNK] for i in range(0, len(rows), _CHUNK)]
        if len(chunks) == 1:  # the rows and their count: one statement, one round trip
            with self.db.statement() as conn:
                return self._execute(conn, chunks[0], counted=True)
        stored: list[str] = []
        with self.db.connection() as conn:
            for chunk in chunks:
                stored += self._execute(conn, chunk, counted=False)
            if stored:  # the count last: its row is locked only once every row is in
                conn.execute(_BUMP.format(rows="VALUES (%s, %s)"), (self.name, len(stored)))
        return stored

    def _execute(
        self, conn: psycopg.Connection[Any], chunk: Sequence[_Prepared], *, counted: bool
    ) -> list[str]:
        """One ``INSERT`` of ``chunk`` (with its count's update where ``counted``)."""
        cur = conn.cursor()
        cur.adapters.register_dumper(_Floats, _FloatsDumper)
        if len(chunk) < _FEW:
            texts, args = (_COUNTED_VALUES if counted else _VALUES), self._values(chunk)
            cur.execute(texts[len(chunk)], [*args, self.name] if counted else args)
        else:
            args = self._arrays(chunk)
            cur.execute(
                _COUNTED_INSERT if counted else _INSERT, [*args, self.name] if counted else args
            )
        return [r[0] for r in cur.fetchall()]

    def _values(self, chunk: Sequence[_Prepared]) -> list[Any]:
        args: list[Any] = []
        for r in chunk:
            args += [self.name, r.id, r.time, _Floats(r.features), r.label_json]
        return args

    def _arrays(self, chunk: Sequence[_Prepared]) -> list[Any]:
        flat = np.concatenate([r.features for r in chunk])
        return [self.name, _Floats(flat), _records_json(chunk)]

    def count(self) -> int:
        """Rows stored."""
        return self.count_since(0)

    def count_since(self, watermark: int) -> int:
        """Rows appended after ``watermark`` (a sequence number, e.g. ``DataRange.last_seq``).

        The dataset's row count (``mlfn_dataset_counts``, kept by the appends) less the
        rows up to ``watermark``, which are counted once per watermark (the retrain loop
        asks with the same one once per stored row): one index lookup, not a scan of every
        row after the watermark. A row that commits after that count with a sequence
        number below the watermark (appends of other callers commit in any order) counts
        as after it: it is one no training has read.
        """
        known = self._upto
        with self.db.statement() as conn:
            if watermark <= 0 or (known is not None and known[0] == watermark):
                found = conn.execute(_TOTAL, (self.name,)).fetchone()
                upto = 0 if watermark <= 0 else known[1]  # type: ignore[index]
            else:
                found = conn.execute(
                    _TOTAL + ", " + _UPTO, (self.name, self.name, watermark)
                ).fetchone()
                upto = int(found[1]) if found else 0
                self._upto = (watermark, upto)
        total = int(found[0]) if found else 0
        return max(0, total - upto)

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
            "SELECT seq, id, time, array_send(features), label FROM mlfn_dataset_rows "
            "WHERE dataset = %s AND seq > %s"
        )
        args: list[Any] = [self.name, after]
        if upto is not None:
            sql += " AND seq <= %s"
            args.append(upto)
        if labelled_only:
            sql += " AND label IS NOT NULL"
        with self.db.statement() as conn:
            cur = conn.cursor()
            set_json_loads(_label_of, cur)  # a training reads every row: 1 instead of 7 us a label
            found = cur.execute(sql + " ORDER BY seq", args).fetchall()
        if not found:
            return TrainingData(np.zeros((0, 0)), np.zeros(0), [], None)
        features = [_floats_of(r[3]) for r in found]
        widths = {len(f) for f in features}
        if len(widths) > 1:
            raise DatasetError(
                f"dataset {self.name!r}: the rows of this read have {sorted(widths)} features; "
                "rows of a dataset must agree"
            )
        X = np.stack(features)
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
        ds = self._open.get(name)
        return ds if ds is not None else self._open.setdefault(name, PgDataset(name, self.db))

    def close(self) -> None:
        """Nothing to close: the pool belongs to :func:`runtime.stores.open_stores`."""
        self._open.clear()
