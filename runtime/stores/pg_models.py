"""The model registry in PostgreSQL: versions, metadata, artifacts and the served pointer.

Tables (see :data:`runtime.stores.database.SCHEMA`): ``mlfn_models`` (one row per model:
the ``latest`` pointer and a count of its ``moves``), ``mlfn_model_versions`` (metadata as
JSON, rejected candidates included) and ``mlfn_model_files`` (the backend's files as
``bytea`` with their sha256, or the key of an object in an S3-compatible store with
``MLFN_ARTIFACT_URL``: see :mod:`runtime.stores.s3_artifacts`, uploaded before the
transaction). Publishing is one transaction: lock the model's row, allocate
the next number, insert the metadata and the files, move the pointer, ``NOTIFY``. A reader
sees a whole version or none, and a publisher that dies mid-write leaves nothing behind.
Files are the backend's (skops, safetensors): nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Hashable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from runtime.datasets import DataRange
from runtime.errors import ModelNotFoundError, ModelStoreError
from runtime.models.store import ModelStore, ModelVersion, PointerWatch, check_model_name
from runtime.stores.database import NOTIFY_CHANNEL, Database
from runtime.stores.listener import PointerListener
from runtime.stores.s3_artifacts import S3Artifacts

__all__ = ["PgModelStore"]


class PgModelStore(ModelStore):
    """A :class:`ModelStore` in PostgreSQL, shared by every replica that names the database."""

    def __init__(self, db: Database, artifacts: S3Artifacts | None = None) -> None:
        self.db = db
        self.artifacts = artifacts
        self._listener: PointerListener | None = None
        self._listener_lock = threading.Lock()

    def __repr__(self) -> str:
        if self.artifacts is not None:
            return f"PgModelStore({self.db.where!r}, artifacts={self.artifacts.url!r})"
        return f"PgModelStore({self.db.where!r})"

    def put(
        self,
        name: str,
        files: Mapping[str, bytes],
        *,
        backend: str,
        metrics: Mapping[str, float] | None = None,
        data: DataRange | None = None,
        extra: Mapping[str, Any] | None = None,
        make_latest: bool = True,
    ) -> ModelVersion:
        check_model_name(name)
        hashes: dict[str, str] = {}
        for fname, blob in files.items():
            if fname == "meta.json" or "/" in fname or fname.startswith("."):
                raise ModelStoreError(
                    f"backend file name {fname!r} is not allowed: use a plain name, "
                    "not 'meta.json', without '/' or a leading '.'"
                )
            hashes[fname] = hashlib.sha256(blob).hexdigest()
        # the object store first, under keys of this attempt alone: the rows that name
        # them (and the pointer) commit afterwards in one transaction, or not at all
        objects = self.artifacts.write(name, files) if self.artifacts is not None else {}
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO mlfn_models (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,)
            )
            conn.execute("SELECT 1 FROM mlfn_models WHERE name = %s FOR UPDATE", (name,))
            row = conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM mlfn_model_versions WHERE name = %s",
                (name,),
            ).fetchone()
            assert row is not None
            meta = ModelVersion(
                name=name,
                version=int(row[0]),
                created=datetime.now(UTC),
                backend=backend,
                files=hashes,
                metrics=dict(metrics or {}),
                data=data,
                extra=dict(extra or {}),
            )
            conn.execute(
                "INSERT INTO mlfn_model_versions (name, version, meta) VALUES (%s, %s, %s)",
                (name, meta.version, Jsonb(meta.model_dump(mode="json"))),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO mlfn_model_files (name, version, file, sha256, data, object) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (
                            name,
                            meta.version,
                            f,
                            hashes[f],
                            None if f in objects else blob,
                            objects.get(f),
                        )
                        for f, blob in files.items()
                    ],
                )
            if make_latest:
                self._move(conn, name, meta.version)
        return meta

    @staticmethod
    def _move(conn: Any, name: str, version: int) -> None:
        conn.execute(
            "UPDATE mlfn_models SET latest = %s, moves = moves + 1 WHERE name = %s",
            (version, name),
        )
        conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, name))

    def _numbers(self, conn: Any, name: str) -> list[int]:
        rows = conn.execute(
            "SELECT version FROM mlfn_model_versions WHERE name = %s ORDER BY version", (name,)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def _missing(self, conn: Any, name: str, version: int | None = None) -> ModelNotFoundError:
        numbers = self._numbers(conn, name)
        if version is None or not numbers:
            found = ", ".join(self._names(conn)) or "none"
            return ModelNotFoundError(
                f"no published version of model {name!r} in {self!r}; models found: {found}. "
                "Publish one (run the retrain function) or register a bootstrap hook"
            )
        have = ", ".join(str(n) for n in numbers)
        return ModelNotFoundError(f"model {name!r} has no version {version}; versions: {have}")

    def _latest(self, conn: Any, name: str) -> int:
        row = conn.execute("SELECT latest FROM mlfn_models WHERE name = %s", (name,)).fetchone()
        if row is None or row[0] is None:
            raise self._missing(conn, name)
        return int(row[0])

    def info(self, name: str, version: int | None = None) -> ModelVersion:
        check_model_name(name)
        with self.db.connection() as conn:
            number = self._latest(conn, name) if version is None else version
            row = conn.execute(
                "SELECT meta FROM mlfn_model_versions WHERE name = %s AND version = %s",
                (name, number),
            ).fetchone()
            if row is None:
                raise self._missing(conn, name, number)
        try:
            return ModelVersion.model_validate(row[0])
        except ValueError as err:
            raise ModelStoreError(f"metadata of {name!r} v{number} is corrupt: {err}") from err

    def versions(self, name: str) -> list[ModelVersion]:
        check_model_name(name)
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT meta FROM mlfn_model_versions WHERE name = %s ORDER BY version", (name,)
            ).fetchall()
        return [ModelVersion.model_validate(r[0]) for r in rows]

    def get_files(self, name: str, version: int) -> dict[str, bytes]:
        meta = self.info(name, version)
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT file, data, object FROM mlfn_model_files WHERE name = %s AND version = %s",
                (name, version),
            ).fetchall()
        stored = {r[0]: (r[1], r[2]) for r in rows}
        out: dict[str, bytes] = {}
        for fname, digest in meta.files.items():
            if fname not in stored:
                raise ModelStoreError(
                    f"file {fname!r} of model {name!r} v{version} is missing from {self!r}; "
                    "publish a new version"
                )
            data, uri = stored[fname]
            blob = bytes(data) if data is not None else self._read_object(name, version, uri)
            if hashlib.sha256(blob).hexdigest() != digest:
                raise ModelStoreError(
                    f"file {fname!r} of model {name!r} v{version} does not match its recorded "
                    "sha256; the registry was modified by hand: publish a new version"
                )
            out[fname] = blob
        return out

    def _read_object(self, name: str, version: int, uri: str | None) -> bytes:
        if uri is None:
            raise ModelStoreError(f"a file of model {name!r} v{version} has no bytes and no object")
        if self.artifacts is None:
            raise ModelStoreError(
                f"the files of model {name!r} v{version} are in an object store ({uri}); "
                "set MLFN_ARTIFACT_URL (and MLFN_ARTIFACT_ENDPOINT_URL, credentials) to read them"
            )
        return self.artifacts.read(uri)

    def latest(self, name: str) -> int:
        check_model_name(name)
        with self.db.connection() as conn:
            return self._latest(conn, name)

    def latest_token(self, name: str) -> Hashable | None:
        with self.db.statement() as conn:  # one round trip: every replica polls it
            row = conn.execute(
                "SELECT latest, moves FROM mlfn_models WHERE name = %s", (name,)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return (int(row[0]), int(row[1]))

    def watch(self, name: str) -> PointerWatch:
        """Woken by the ``NOTIFY`` of each pointer move (one ``LISTEN`` connection per
        process, shared by the watches; see :mod:`runtime.stores.listener`)."""
        check_model_name(name)
        with self._listener_lock:
            if self._listener is None:
                self._listener = PointerListener(self.db)
                self.db.on_close(self._listener.stop)
            return self._listener.watch(name)

    def set_latest(self, name: str, version: int) -> None:
        check_model_name(name)
        with self.db.connection() as conn:
            conn.execute("SELECT 1 FROM mlfn_models WHERE name = %s FOR UPDATE", (name,))
            if version not in self._numbers(conn, name):
                raise self._missing(conn, name, version)
            self._move(conn, name, version)

    @staticmethod
    def _names(conn: Any) -> list[str]:
        rows = conn.execute("SELECT DISTINCT name FROM mlfn_model_versions ORDER BY name")
        return [str(r[0]) for r in rows.fetchall()]

    def names(self) -> list[str]:
        with self.db.connection() as conn:
            return self._names(conn)

    @contextlib.contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        with self.db.advisory_lock("model", check_model_name(name)):
            yield

    def exclusive(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self._exclusive(name)
