"""Model files in an S3-compatible object store, the registry in PostgreSQL: against a real
S3-protocol server (moto's, on a free loopback port) and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from sklearn.linear_model import LogisticRegression

from mlfn.settings import Settings
from runtime.errors import ModelStoreError, StoreUnavailableError
from runtime.stores import Stores, close_all, open_stores
from runtime.stores.database import Database
from runtime.stores.pg_models import PgModelStore
from runtime.stores.s3_artifacts import S3Artifacts, parse_s3_url
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration


def _model(seed: int) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 4))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


@pytest.fixture
def stores(
    database_url: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> Iterator[Stores]:
    settings = Settings().updated(
        common={"home": tmp_path},
        models={
            "database_url": database_url,
            "artifact_url": f"s3://{s3_bucket}/team/models",
            "artifact_endpoint_url": s3_server.endpoint,
        },
    )
    yield open_stores(settings)
    close_all()


def _keys(server: S3Server, bucket: str) -> list[str]:
    listed = server.client().list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_files_go_to_the_bucket_and_every_replica_reads_them(
    stores: Stores, s3_server: S3Server, s3_bucket: str
) -> None:
    models = stores.models
    clf = _model(0)
    meta = models.publish("toy", clf, metrics={"accuracy": 0.9})
    keys = _keys(s3_server, s3_bucket)
    assert keys and all(k.startswith("team/models/toy/") for k in keys)
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == sorted(meta.files)
    assert stores.database is not None
    with psycopg.connect(stores.database.url) as conn:  # the registry holds no bytes
        rows = conn.execute("SELECT data, object FROM mlfn_model_files").fetchall()
    assert rows and all(data is None and obj.startswith(f"s3://{s3_bucket}/") for data, obj in rows)
    # another replica: a database object and an S3 client of its own
    db = Database(stores.database.url)
    try:
        other = PgModelStore(
            db, S3Artifacts(f"s3://{s3_bucket}/team/models", endpoint_url=s3_server.endpoint)
        )
        X = np.ones((3, 4))
        loaded = other.load("toy")
        assert loaded.version == 1 and loaded.model.predict(X).tolist() == clf.predict(X).tolist()
        models.publish("toy", _model(1))
        assert other.latest("toy") == 2 and other.load("toy").version == 2
        with pytest.raises(
            ModelStoreError, match=r"are in an object store .*set MLFN_ARTIFACT_URL"
        ):
            PgModelStore(db).load("toy")  # a replica without the object store's settings
    finally:
        db.close()


class _FailingSecondUpload:
    """An S3 client whose second upload fails, as a publisher dying mid-version would."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.puts = 0

    def put_object(self, **kwargs: Any) -> Any:
        self.puts += 1
        if self.puts == 2:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return self.client.put_object(**kwargs)

    def get_object(self, **kwargs: Any) -> Any:
        return self.client.get_object(**kwargs)


def test_a_half_written_version_is_never_seen(
    stores: Stores, s3_server: S3Server, s3_bucket: str
) -> None:
    models = stores.models
    models.publish("toy", _model(0))
    assert isinstance(models, PgModelStore) and models.artifacts is not None
    failing = PgModelStore(
        models.db,
        S3Artifacts(models.artifacts.url, client=_FailingSecondUpload(s3_server.client())),
    )
    files = {"a.bin": b"first file", "b.bin": b"second file"}
    with pytest.raises(StoreUnavailableError, match="the object store is unreachable"):
        failing.put("toy", files, backend="sklearn")
    # one object was written; no version names it, the pointer did not move
    assert [v.version for v in models.versions("toy")] == [1] and models.latest("toy") == 1
    assert models.load("toy").version == 1
    stray = [k for k in _keys(s3_server, s3_bucket) if k.endswith("/a.bin")]
    assert len(stray) == 1  # unreferenced: harmless, and never read
    assert models.put("toy", files, backend="sklearn").version == 2  # the next attempt is whole


def test_a_changed_or_missing_object_is_a_clear_error(
    stores: Stores, s3_server: S3Server, s3_bucket: str
) -> None:
    models = stores.models
    meta = models.put("toy", {"w.bin": b"weights"}, backend="sklearn")
    (key,) = _keys(s3_server, s3_bucket)
    client: Any = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"tampered")
    with pytest.raises(ModelStoreError, match="does not match its recorded sha256"):
        models.get_files("toy", meta.version)
    client.delete_object(Bucket=s3_bucket, Key=key)
    with pytest.raises(ModelStoreError, match="the object is missing from s3://"):
        models.get_files("toy", meta.version)


def test_an_unreachable_object_store_is_a_retryable_error(s3_bucket: str) -> None:
    from tests.conftest import free_port

    dead = S3Artifacts(f"s3://{s3_bucket}", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreUnavailableError, match=r"object store at http://127\.0\.0\.1:\d+"):
        dead.read(f"s3://{s3_bucket}/toy/x/w.bin")


def test_settings_that_cannot_work_say_how_to_fix_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MLFN_ARTIFACT_URL needs MLFN_DATABASE_URL"):
        open_stores(
            Settings().updated(common={"home": tmp_path}, models={"artifact_url": "s3://b/p"})
        )
    with pytest.raises(ValueError, match=r"must be s3://BUCKET\[/PREFIX\]"):
        parse_s3_url("https://bucket/prefix")
    assert parse_s3_url("s3://models") == ("models", "")
    assert parse_s3_url("s3://models/a/b/") == ("models", "a/b/")
