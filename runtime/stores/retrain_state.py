"""Retraining state that outlives the process: last training, failures, and single flight.

A retrain function scales to zero, so nothing it needs to decide *when* to train may live
only in its memory. The pending rows are the dataset rows after the served version's data
range (both stored); what is left is kept here per model: when the time trigger started
counting (``since``), when the last training started and ended, how it ended, and the
consecutive failures (for the backoff). :meth:`RetrainState.single_flight` is the lock
that keeps two replicas from training the same model at once.

- :class:`LocalRetrainState`: a JSON file per model under ``HOME/retrain`` and an
  ``fcntl`` lock (one machine, ``mlfn dev``).
- :class:`PgRetrainState`: the ``mlfn_retrain_state`` table and a PostgreSQL advisory
  lock, released by the server if the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runtime.models.store import check_model_name
from runtime.stores.database import Database

__all__ = ["LocalRetrainState", "PgRetrainState", "RetrainRecord", "RetrainState"]


@dataclass(frozen=True)
class RetrainRecord:
    """The stored state of one model's retraining (times are UTC)."""

    since: datetime
    """When this state was first created: the time trigger counts from here at first."""
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_outcome: str | None = None
    failures: int = 0
    """Consecutive failed trainings (0 after a success)."""
    last_error: str | None = None
    trainings: int = 0

    @property
    def epoch(self) -> datetime:
        """What the time trigger counts from: the last training start, else ``since``."""
        return self.last_started or self.since


def _now() -> datetime:
    return datetime.now(UTC)


class RetrainState(ABC):
    """Where a model's retraining state lives."""

    @abstractmethod
    def get(self, model: str) -> RetrainRecord:
        """The model's state, created (``since`` = now) when it has none."""

    @abstractmethod
    def started(self, model: str) -> None:
        """A training of ``model`` starts now."""

    @abstractmethod
    def finished(self, model: str, outcome: str, *, ok: bool, error: str | None = None) -> None:
        """The running training ended with ``outcome``; ``ok=False`` counts a failure."""

    @abstractmethod
    def single_flight(
        self, model: str, *, wait: bool = True
    ) -> contextlib.AbstractContextManager[bool]:
        """Hold the lock that only one trainer of ``model`` holds; yields whether it is held."""


class LocalRetrainState(RetrainState):
    """State as ``<root>/<model>.json`` (written atomically), single flight by ``fcntl``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalRetrainState({str(self.root)!r})"

    def _path(self, model: str) -> Path:
        return self.root / f"{check_model_name(model)}.json"

    def _read(self, model: str) -> RetrainRecord | None:
        try:
            raw = json.loads(self._path(model).read_text())
        except (FileNotFoundError, ValueError):
            return None
        for key in ("since", "last_started", "last_finished"):
            if raw.get(key):
                raw[key] = datetime.fromisoformat(raw[key])
        return RetrainRecord(**raw)

    def _write(self, model: str, record: RetrainRecord) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = asdict(record)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(model))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self, model: str, suffix: str, wait: bool = True) -> Iterator[bool]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{check_model_name(model)}.{suffix}", "a+b") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def get(self, model: str) -> RetrainRecord:
        with self._locked(model, "state"):
            record = self._read(model)
            if record is None:
                record = RetrainRecord(since=_now())
                self._write(model, record)
            return record

    def started(self, model: str) -> None:
        with self._locked(model, "state"):
            record = self._read(model) or RetrainRecord(since=_now())
            self._write(
                model,
                RetrainRecord(
                    since=record.since,
                    last_started=_now(),
                    last_finished=record.last_finished,
                    last_outcome=record.last_outcome,
                    failures=record.failures,
                    last_error=record.last_error,
                    trainings=record.trainings + 1,
                ),
            )

    def finished(self, model: str, outcome: str, *, ok: bool, error: str | None = None) -> None:
        with self._locked(model, "state"):
            record = self._read(model) or RetrainRecord(since=_now())
            self._write(
                model,
                RetrainRecord(
                    since=record.since,
                    last_started=record.last_started,
                    last_finished=_now(),
                    last_outcome=outcome,
                    failures=0 if ok else record.failures + 1,
                    last_error=None if ok else error,
                    trainings=record.trainings,
                ),
            )

    def single_flight(
        self, model: str, *, wait: bool = True
    ) -> contextlib.AbstractContextManager[bool]:
        return self._locked(model, "train", wait)


class PgRetrainState(RetrainState):
    """State in ``mlfn_retrain_state``; single flight by a session advisory lock per model."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"PgRetrainState({self.db.where!r})"

    def get(self, model: str) -> RetrainRecord:
        check_model_name(model)
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO mlfn_retrain_state (model, since) VALUES (%s, now()) "
                "ON CONFLICT DO NOTHING",
                (model,),
            )
            row = conn.execute(
                "SELECT since, last_started, last_finished, last_outcome, failures, last_error, "
                "trainings FROM mlfn_retrain_state WHERE model = %s",
                (model,),
            ).fetchone()
        assert row is not None
        return RetrainRecord(
            since=row[0],
            last_started=row[1],
            last_finished=row[2],
            last_outcome=row[3],
            failures=int(row[4]),
            last_error=row[5],
            trainings=int(row[6]),
        )

    def started(self, model: str) -> None:
        self.get(model)
        with self.db.connection() as conn:
            conn.execute(
                "UPDATE mlfn_retrain_state SET last_started = now(), trainings = trainings + 1 "
                "WHERE model = %s",
                (model,),
            )

    def finished(self, model: str, outcome: str, *, ok: bool, error: str | None = None) -> None:
        self.get(model)
        with self.db.connection() as conn:
            conn.execute(
                "UPDATE mlfn_retrain_state SET last_finished = now(), last_outcome = %s, "
                "failures = CASE WHEN %s THEN 0 ELSE failures + 1 END, last_error = %s "
                "WHERE model = %s",
                (outcome, ok, None if ok else error, model),
            )

    def single_flight(
        self, model: str, *, wait: bool = True
    ) -> contextlib.AbstractContextManager[bool]:
        return self.db.advisory_lock("train", check_model_name(model), wait=wait)
