"""The PostgreSQL stores against a real server: the same behaviour as the local ones, shared."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from sklearn.linear_model import LogisticRegression

from mlfn.settings import Settings
from runtime.datasets import Row
from runtime.errors import ModelNotFoundError, ModelStoreError
from runtime.models import ModelHandle
from runtime.spec import ModelRef
from runtime.stores import Stores, close_all, open_stores
from runtime.stores.database import Database
from runtime.stores.pg_models import PgModelStore

pytestmark = pytest.mark.integration


def _tiny_model(seed: int = 0) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 4))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


def _settings(home: Path, database_url: str | None = None) -> Settings:
    return Settings().updated(common={"home": home}, models={"database_url": database_url})


@pytest.fixture
def stores(database_url: str, tmp_path: Path) -> Iterator[Stores]:
    yield open_stores(_settings(tmp_path, database_url))
    close_all()


def test_the_url_chooses_the_store(database_url: str, tmp_path: Path) -> None:
    local = open_stores(_settings(tmp_path))
    shared = open_stores(_settings(tmp_path, database_url))
    assert type(local.models).__name__ == "LocalModelStore" and local.database is None
    assert isinstance(shared.models, PgModelStore) and shared.database is not None
    assert open_stores(_settings(tmp_path / "x", database_url)) is shared


def test_publish_load_versions_pointer(stores: Stores) -> None:
    models = stores.models
    clf = _tiny_model()
    meta = models.publish("toy", clf, metrics={"accuracy": 0.9}, extra={"note": "first"})
    assert (meta.version, meta.metrics, meta.extra) == (1, {"accuracy": 0.9}, {"note": "first"})
    rejected = models.publish("toy", _tiny_model(1), make_latest=False)
    assert rejected.version == 2 and models.latest("toy") == 1  # kept, never served
    loaded = models.load("toy")
    X = np.ones((3, 4))
    assert loaded.version == 1 and loaded.model.predict(X).tolist() == clf.predict(X).tolist()
    token = models.latest_token("toy")
    models.set_latest("toy", 2)
    assert models.latest("toy") == 2 and models.latest_token("toy") != token
    assert [v.version for v in models.versions("toy")] == [1, 2] and models.names() == ["toy"]
    with pytest.raises(ModelNotFoundError, match="has no version 9; versions: 1, 2"):
        models.set_latest("toy", 9)
    with pytest.raises(ModelNotFoundError, match=r"'digts'.*models found: toy"):
        models.load("digts")
    assert models.latest_token("digts") is None


def test_concurrent_publishers_never_collide(stores: Stores) -> None:
    def publish() -> None:
        for _ in range(5):
            stores.models.put("toy", {"w": b"x" * 100}, backend="sklearn")

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [v.version for v in stores.models.versions("toy")] == list(range(1, 21))
    assert stores.models.latest("toy") == 20


def test_a_half_written_version_is_never_seen(stores: Stores) -> None:
    models = stores.models
    models.put("toy", {"w": b"one"}, backend="sklearn")
    with pytest.raises(ModelStoreError, match="not allowed"):  # fails after the first file
        models.put("toy", {"w": b"two", "../evil": b"x"}, backend="sklearn")
    assert [v.version for v in models.versions("toy")] == [1] and models.latest("toy") == 1
    assert stores.database is not None
    with psycopg.connect(stores.database.url) as conn:  # a file changed by hand is caught
        conn.execute("UPDATE mlfn_model_files SET data = 'tampered'::bytea")
    with pytest.raises(ModelStoreError, match="does not match its recorded sha256"):
        models.get_files("toy", 1)


def test_datasets_are_idempotent_and_ordered(stores: Stores) -> None:
    ds = stores.datasets.open("digits")
    rows = [Row(f"ev-{i}", [float(i)] * 3, i % 2) for i in range(10)]
    assert ds.append(rows) == 10
    assert ds.append([*rows[:5], Row("ev-x", [1.0, 2.0, 3.0], None)]) == 1  # redelivery
    assert ds.count() == 11 and ds.watermark() >= 11 and ds.count_since(8) == 3
    data = ds.read()
    assert data.X.shape == (10, 3) and data.ids[0] == "ev-0" and data.range is not None
    assert data.range.last_seq == 10 and data.y.tolist() == [i % 2 for i in range(10)]
    assert ds.read(after=5, upto=7).ids == ["ev-5", "ev-6"]
    assert len(ds.read(labelled_only=False).ids) == 11
    other = open_stores(_settings(Path("/nonexistent"), stores.database.url))  # type: ignore[union-attr]
    assert other.datasets.open("digits").count() == 11  # one truth for every replica


def test_features_keep_every_bit_and_non_finite_values(stores: Stores) -> None:
    ds = stores.datasets.open("floats")
    values = [0.1, 1 / 3, -2.5e-300, 1e308, 7.0, float("nan"), float("inf"), float("-inf")]
    other = [np.float32(0.1), 2, 0, 0, 0, 0, 0, 0]
    ds.append([Row("a", values, 1), Row("b", other, 0)])  # type: ignore[arg-type]
    X = ds.read().X
    assert X[0, :5].tolist() == values[:5]  # the shortest repr round-trips exactly
    assert np.isnan(X[0, 5]) and X[0, 6] == np.inf and X[0, 7] == -np.inf
    assert X[1, :2].tolist() == [float(np.float32(0.1)), 2.0]


def test_concurrent_appends_lose_nothing_and_duplicate_nothing(stores: Stores) -> None:
    ds = stores.datasets.open("digits")

    def append(k: int) -> None:
        for i in range(20):
            ds.append([Row(f"w{k}-{i}", [1.0], 1), Row(f"dup-{i}", [1.0], 1)])

    threads = [threading.Thread(target=append, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ds.count() == 4 * 20 + 20 and len(set(ds.read().ids)) == ds.count()


def test_replicas_on_an_empty_store_bootstrap_one_version(stores: Stores) -> None:
    calls: list[int] = []
    gate = threading.Barrier(3)

    def bootstrap(store: object) -> None:
        calls.append(1)
        assert isinstance(store, PgModelStore)
        store.publish("toy", _tiny_model(), extra={"bootstrap": True})

    handles = [
        ModelHandle(ModelRef(name="toy", poll_seconds=0.1), stores.models, bootstrap=bootstrap)
        for _ in range(3)
    ]

    def start(h: ModelHandle) -> None:
        gate.wait()
        h.start()

    threads = [threading.Thread(target=start, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(calls) == 1 and [h.current().version for h in handles] == [1, 1, 1]
        stores.models.publish("toy", _tiny_model(2))
        for h in handles:  # the poll reaches every replica, event or not
            assert h.refresh() or h.current().version == 2
        assert [h.current().version for h in handles] == [2, 2, 2]
    finally:
        for h in handles:
            h.stop()


def test_retrain_state_and_single_flight(stores: Stores) -> None:
    state = stores.retrain
    first = state.get("toy")
    assert first.last_started is None and first.failures == 0
    state.started("toy")
    state.finished("toy", "failed", ok=False, error="boom")
    record = state.get("toy")
    assert record.failures == 1 and record.last_error == "boom" and record.trainings == 1
    assert record.since == first.since and record.epoch == record.last_started
    with state.single_flight("toy") as held:
        assert held
        seen: list[bool] = []

        def try_it() -> None:
            with state.single_flight("toy", wait=False) as other:
                seen.append(other)

        t = threading.Thread(target=try_it)
        t.start()
        t.join()
        assert seen == [False]
    with state.single_flight("toy", wait=False) as again:
        assert again


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    from tests.conftest import free_port

    db = Database(f"postgresql://mlfn:secret@127.0.0.1:{free_port()}/mlfn", timeout=1)
    try:
        with pytest.raises(Exception, match=r"127\.0\.0\.1:\d+/mlfn is unreachable") as info:
            db.ping()
        assert type(info.value).__name__ == "StoreUnavailableError"
        assert "secret" not in str(info.value)
    finally:
        db.close()
    with pytest.raises(ValueError, match="must be a postgresql:// URL"):
        Database("mysql://x")
