from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from runtime.errors import ModelNotFoundError, ModelStoreError
from runtime.models import LocalModelStore

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def _tiny_model(seed: int = 0) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 4))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


def test_publish_load_and_metadata(store: LocalModelStore) -> None:
    clf = _tiny_model()
    meta = store.publish("toy", clf, metrics={"accuracy": 0.9}, extra={"note": "first"})
    assert (meta.version, meta.backend, meta.metrics, meta.extra) == (
        1,
        "sklearn",
        {"accuracy": 0.9},
        {"note": "first"},
    )
    assert store.publish("toy", clf).version == 2
    loaded = store.load("toy")
    assert loaded.version == 2 and loaded.metadata["version"] == 2
    X = np.ones((3, 4))
    assert loaded.model.predict(X).tolist() == clf.predict(X).tolist()
    assert [v.version for v in store.versions("toy")] == [1, 2]
    assert store.names() == ["toy"]


def test_rollback_moves_latest_and_refuses_missing_versions(store: LocalModelStore) -> None:
    for _ in range(3):
        store.put("toy", {"w": b"x"}, backend="sklearn")
    store.set_latest("toy", 1)
    assert store.latest("toy") == 1
    assert store.publish("toy", _tiny_model()).version == 4  # versions stay monotonic
    with pytest.raises(ModelNotFoundError, match="has no version 9; versions: 1, 2, 3, 4"):
        store.set_latest("toy", 9)


def test_errors_name_what_exists(store: LocalModelStore) -> None:
    store.put("digits", {"w": b"x"}, backend="sklearn")
    with pytest.raises(ModelNotFoundError, match=r"'digts'.*models found: digits"):
        store.load("digts")
    with pytest.raises(ModelStoreError, match=r"invalid model name '../x'"):
        store.latest("../x")
    with pytest.raises(ModelStoreError, match="not allowed"):
        store.put("digits", {"meta.json": b"{}"}, backend="sklearn")


def test_tampered_files_are_refused(store: LocalModelStore) -> None:
    store.publish("toy", _tiny_model())
    path = store.root / "toy" / "versions" / "1" / "model.skops"
    path.write_bytes(path.read_bytes() + b"!")
    with pytest.raises(ModelStoreError, match="does not match its recorded sha256"):
        store.load("toy")


def test_failed_publish_leaves_nothing_behind(store: LocalModelStore) -> None:
    store.put("toy", {"w": b"1"}, backend="sklearn")
    with pytest.raises(ModelStoreError):
        store.put("toy", {"ok": b"2", ".hidden": b"3"}, backend="sklearn")
    mdir = store.root / "toy"
    assert sorted(p.name for p in (mdir / "versions").iterdir()) == ["1"]
    assert not [p for p in mdir.iterdir() if p.name.startswith(".tmp-")]
    assert store.latest("toy") == 1


def test_concurrent_publishers_never_collide(store: LocalModelStore) -> None:
    """Threads here and a second process publish at once: every version is distinct."""
    script = (
        "import sys; from runtime.models import LocalModelStore\n"
        "s = LocalModelStore(sys.argv[1])\n"
        "for i in range(15): s.put('toy', {'w': b'p%d' % i}, backend='sklearn')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(store.root)], cwd=REPO)
    got: list[int] = []
    lock = threading.Lock()

    def publish() -> None:
        for i in range(10):
            v = store.put("toy", {"w": b"t%d" % i}, backend="sklearn").version
            with lock:
                got.append(v)

    threads = [threading.Thread(target=publish) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proc.wait(timeout=60) == 0
    assert len(set(got)) == 30
    assert [v.version for v in store.versions("toy")] == list(range(1, 46))
    assert store.latest("toy") in range(1, 46)


def test_readers_never_see_a_half_written_version(store: LocalModelStore) -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB, checked by sha256 on every read
    store.put("big", {"w": blob}, backend="sklearn")
    done = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        while not done.is_set():
            try:
                v = store.latest("big")
                assert store.get_files("big", v) == {"w": blob}
            except BaseException as err:
                errors.append(err)
                return

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(15):
        store.put("big", {"w": blob}, backend="sklearn")
    done.set()
    reader.join()
    assert not errors


def test_leftovers_of_a_dead_publisher_are_swept(store: LocalModelStore) -> None:
    store.put("toy", {"w": b"1"}, backend="sklearn")
    stale, fresh = store.root / "toy" / ".tmp-dead", store.root / "toy" / ".tmp-busy"
    for d in (stale, fresh):
        d.mkdir()
        (d / "w").write_bytes(b"half")
    os.utime(stale, (0, 0))
    store.put("toy", {"w": b"2"}, backend="sklearn")
    assert not stale.exists() and fresh.exists()  # a publisher may still be writing fresh
