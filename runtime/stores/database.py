"""One PostgreSQL database behind the stores: a connection pool, the schema, locks, errors.

:class:`Database` is shared by the model registry, the dataset store and the retraining
state of one process (see :func:`runtime.stores.open_stores`). Every foreign error of the
driver is converted here, in one place, into :class:`~runtime.errors.StoreUnavailableError`
(the database is down or unreachable: retry) with the cause kept. The schema is created on
first use under a transaction-scoped advisory lock, so replicas that start together do
not race on ``CREATE TABLE``.

Session advisory locks (:meth:`Database.advisory_lock`) hold on a connection of their own:
when the process dies, PostgreSQL closes the connection and the lock is released.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import conninfo, sql
from psycopg_pool import ConnectionPool, PoolTimeout

from runtime.errors import StoreUnavailableError

__all__ = ["NOTIFY_CHANNEL", "SCHEMA", "Database", "lock_key", "redact"]

log = logging.getLogger("mlfn.stores")

SCHEMA = """
CREATE TABLE IF NOT EXISTS mlfn_models (
    name    text PRIMARY KEY,
    latest  integer,
    moves   bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS mlfn_model_versions (
    name     text NOT NULL REFERENCES mlfn_models (name),
    version  integer NOT NULL,
    meta     jsonb NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS mlfn_model_files (
    name     text NOT NULL,
    version  integer NOT NULL,
    file     text NOT NULL,
    sha256   text NOT NULL,
    data     bytea NOT NULL,
    PRIMARY KEY (name, version, file),
    FOREIGN KEY (name, version) REFERENCES mlfn_model_versions (name, version)
);
DO $$ BEGIN  -- v2: a file's bytes may live in an object store (MLFN_ARTIFACT_URL)
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
        AND table_name = 'mlfn_model_files' AND column_name = 'object'
    ) THEN
        ALTER TABLE mlfn_model_files ADD COLUMN object text, ALTER COLUMN data DROP NOT NULL;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS mlfn_dataset_rows (
    dataset   text NOT NULL,
    seq       bigint GENERATED ALWAYS AS IDENTITY,
    id        text NOT NULL,
    time      timestamptz NOT NULL,
    features  double precision[] NOT NULL,
    label     jsonb,
    PRIMARY KEY (dataset, seq),
    UNIQUE (dataset, id)
);
DO $$ BEGIN  -- v3: each dataset's row count, kept by the appends (a count without a scan)
    IF to_regclass('mlfn_dataset_counts') IS NULL THEN
        CREATE TABLE mlfn_dataset_counts (
            dataset  text PRIMARY KEY,
            rows     bigint NOT NULL
        );
        INSERT INTO mlfn_dataset_counts (dataset, rows)
            SELECT dataset, COUNT(*) FROM mlfn_dataset_rows GROUP BY dataset;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS mlfn_retrain_state (
    model         text PRIMARY KEY,
    since         timestamptz NOT NULL DEFAULT now(),
    last_started  timestamptz,
    last_finished timestamptz,
    last_outcome  text,
    failures      integer NOT NULL DEFAULT 0,
    last_error    text,
    trainings     bigint NOT NULL DEFAULT 0
);
"""

NOTIFY_CHANNEL = "mlfn_models"
"""``NOTIFY`` channel of pointer moves; the payload is the model's name."""


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``parts`` (``lock_key("train", "digits")``)."""
    digest = hashlib.sha256("\0".join(("mlfn", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def redact(url: str) -> str:
    """``host:port/dbname`` of a connection URL, without user or password (for messages)."""
    try:
        info = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparsable MLFN_DATABASE_URL"
    host = info.get("host") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


class Database:
    """A pool of connections to ``url``; thread-safe.

    Args:
        url: a ``postgresql://`` URL (MLFN_DATABASE_URL).
        pool_size: most connections this process opens (advisory locks use their own).
        timeout: seconds to wait for a connection before the database counts as unavailable.
    """

    def __init__(self, url: str, *, pool_size: int = 8, timeout: float = 5.0) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                f"MLFN_DATABASE_URL must be a postgresql:// URL, got {url.split(':', 1)[0]}://...; "
                "e.g. postgresql://mlfn:PASSWORD@db.database:5432/mlfn"
            )
        self.url = url
        self.where = redact(url)
        self.timeout = timeout
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            kwargs={
                "connect_timeout": max(1, int(timeout)),
                "application_name": "mlfn",
                "autocommit": True,  # transactions are explicit: connection() opens one
            },
            open=False,
            name="mlfn",
        )
        self._pool.open(wait=False)

    def __repr__(self) -> str:
        return f"Database({self.where!r})"

    def on_close(self, closer: Callable[[], None]) -> None:
        """Call ``closer()`` when the database closes (a listener's ``stop``)."""
        self._closers.append(closer)

    def close(self) -> None:
        closers, self._closers = self._closers, []
        for closer in closers:
            closer()
        self._pool.close()

    def unavailable(self, err: BaseException) -> StoreUnavailableError:
        """The error for a failure to reach the database (the cause stays attached)."""
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return StoreUnavailableError(
            f"the database at {self.where} is unreachable: {detail}; check that PostgreSQL runs "
            "and that MLFN_DATABASE_URL names it (mlfn retries until it answers)"
        )

    @contextlib.contextmanager
    def _converted(self) -> Iterator[None]:
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as err:
            raise self.unavailable(err) from err

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction (committed on success)."""
        self._ensure_schema()
        with self._converted(), self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextlib.contextmanager
    def statement(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit: each statement is its own transaction (one
        round trip; what a single ``INSERT`` of many rows or a read needs)."""
        self._ensure_schema()
        with self._converted(), self._pool.connection() as conn:
            yield conn

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the database answers ``SELECT 1``."""
        with self.statement() as conn:
            conn.execute("SELECT 1")

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._converted(), self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("schema"),))
                conn.execute(SCHEMA)
            self._schema_ready = True

    @contextlib.contextmanager
    def advisory_lock(self, *parts: str, wait: bool = True) -> Iterator[bool]:
        """Hold the session advisory lock of ``parts`` on a connection of its own.

        Yields True when the lock is held; with ``wait=False`` yields False at once when
        another session holds it. The lock ends with the block, or with the process.
        """
        self._ensure_schema()
        key = lock_key(*parts)
        with self._converted():
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.timeout))
            )
        try:
            with self._converted():
                if wait:
                    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                    held = True
                else:
                    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                    held = bool(row and row[0])
            try:
                yield held
            finally:
                if held:
                    # Unlock before closing: a closed session's locks are released by its
                    # backend as it exits, after the client has moved on, so a caller
                    # that tries the lock again at once could still find it held.
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            conn.close()  # and closing the session releases them in any case

    def listen(
        self, channel: str = NOTIFY_CHANNEL, application: str = "mlfn"
    ) -> psycopg.Connection[Any]:
        """A new autocommit connection that LISTENs on ``channel`` (the caller closes it).

        TCP keepalives are on, so a connection that a network cut left half-open fails
        within about half a minute instead of waiting forever.
        """
        with self._converted():
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, int(self.timeout)),
                application_name=application,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
            try:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            except BaseException:
                conn.close()
                raise
        return conn
