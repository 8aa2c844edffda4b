from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from runtime.datasets import Dataset, DatasetError, DatasetStore, Row

pytestmark = pytest.mark.unit


def test_appends_are_idempotent_on_the_event_id(datasets: DatasetStore) -> None:
    ds = datasets.open("toy")
    assert ds.append([Row("a", [0.0, 1.0], 1), Row("b", [1.0, 0.0], 0)]) == 2
    assert ds.append([Row("a", [9.0, 9.0], 9), Row("c", [0.5, 0.5], None)]) == 1  # 'a' redelivered
    assert ds.count() == 3
    data = ds.read()
    assert data.ids == ["a", "b"] and data.y.tolist() == [1, 0]  # unlabelled 'c' left out
    assert data.X.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert data.range is not None
    assert (data.range.rows, data.range.first_id, data.range.last_id) == (2, "a", "b")


def test_watermarks_and_ranges(datasets: DatasetStore) -> None:
    ds = datasets.open("toy")
    ds.append([Row(f"e{i}", [float(i)], i % 2) for i in range(10)])
    mark = ds.watermark()
    ds.append([Row(f"f{i}", [float(i)], i % 2) for i in range(4)])
    assert ds.count_since(mark) == 4
    assert ds.read(after=mark).ids == ["f0", "f1", "f2", "f3"]
    assert ds.read(after=2, upto=5).ids == ["e2", "e3", "e4"]
    assert ds.read(after=ds.watermark()).range is None


def test_rows_survive_reopening_and_concurrent_writers(tmp_path: object) -> None:
    root = tmp_path  # type: ignore[assignment]
    store = DatasetStore(root)  # type: ignore[arg-type]
    ds = store.open("toy")

    def write(k: int) -> None:
        for i in range(20):
            ds.append([Row(f"{i}", [float(k)], k)])  # the same 20 ids from every writer

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    again = DatasetStore(root)  # type: ignore[arg-type]
    try:
        assert again.open("toy").count() == 20
    finally:
        again.close()


def test_bad_names_and_ids_are_refused(datasets: DatasetStore) -> None:
    with pytest.raises(DatasetError, match="invalid dataset name"):
        datasets.open("../etc")
    with pytest.raises(DatasetError, match="empty id"):
        datasets.open("toy").append([Row("", [1.0])])


def test_skipped_duplicates_are_counted_durably(datasets: DatasetStore) -> None:
    ds = datasets.open("dups")
    assert ds.duplicates() == 0
    assert ds.append([Row("a", [1.0]), Row("b", [2.0])]) == 2
    assert ds.append([Row("a", [1.0]), Row("c", [3.0]), Row("c", [3.0])]) == 1
    assert ds.duplicates() == 2
    datasets.close()
    assert DatasetStore(datasets.root).open("dups").duplicates() == 2  # in the file, not in memory


def test_concurrent_appends_commit_together_and_each_counts_its_own(
    datasets: DatasetStore,
) -> None:
    ds = datasets.open("digits")
    go = threading.Barrier(16)
    counts: list[int] = []

    def append(i: int) -> None:
        go.wait()
        # each thread adds its own row and one that every thread adds: stored once
        counts.append(ds.append([Row(f"own-{i}", [0.0] * 64, 1), Row("shared", [0.0] * 64, 2)]))

    threads = [threading.Thread(target=append, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert ds.count() == 17
    assert sorted(counts) == [1] * 15 + [2]
    with pytest.raises(DatasetError, match="empty id"):
        ds.append([Row("", [0.0] * 64, 1)])
    assert ds.append([Row("after", [0.0] * 64, 1)]) == 1


def test_pending_counts_stay_exact_with_another_writer(tmp_path: Path) -> None:
    """count_since counts only new rows when asked again (once per row, in the retrain
    loop); rows another process's connection appends in between are counted too."""
    mine = Dataset("toy", tmp_path / "toy.sqlite3")
    other = Dataset("toy", tmp_path / "toy.sqlite3")  # a second connection: another replica
    try:
        mine.append([Row(f"a{i}", [0.0], 1) for i in range(5)])
        mark = mine.watermark()
        assert mine.count_since(mark) == 0
        for i in range(3):
            mine.append([Row(f"m{i}", [0.0], 1)])
            other.append([Row(f"o{i}", [0.0], 1), Row(f"a{i}", [0.0], 1)])  # a0..a2 redelivered
            assert mine.count_since(mark) == 2 * (i + 1)
        assert mine.count_since(0) == 11  # another watermark: counted afresh
        assert mine.count_since(mark) == 6
        assert other.count_since(mark) == 6
    finally:
        mine.close()
        other.close()


def test_sync_modes(tmp_path: Path) -> None:
    assert DatasetStore(tmp_path).sync == "normal"  # MLFN_DATASET_SYNC's default
    for sync, level in (("normal", 1), ("full", 2)):
        with Dataset(sync, tmp_path / f"{sync}.sqlite3", sync=sync) as ds:  # type: ignore[arg-type]
            assert ds._db.execute("PRAGMA synchronous").fetchone()[0] == level
            assert ds._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(DatasetError, match="'normal' or 'full'"):
        Dataset("bad", tmp_path / "bad.sqlite3", sync="off")  # type: ignore[arg-type]


_KILLED_WRITER = """
import os, signal, sys
from runtime.datasets import DatasetStore, Row
ds = DatasetStore(sys.argv[1]).open("digits")
for i in range(200):
    ds.append([Row(f"ev-{i}", [0.5] * 64, i % 10)])
os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: the rows are in the WAL
"""


def test_committed_rows_survive_a_killed_writer(tmp_path: Path) -> None:
    """The guarantee of docs/guarantees.md: a row whose append returned (the delivery got
    its 2xx) is kept when the process dies at once (SIGKILL, OOM), with sync=normal."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (tmp_path / "digits.sqlite3-wal").stat().st_size > 0  # not checkpointed
    store = DatasetStore(tmp_path)
    try:
        ds = store.open("digits")
        assert ds.count() == 200
        assert ds.read().ids == [f"ev-{i}" for i in range(200)]
    finally:
        store.close()


def test_reading_rows_of_different_widths_says_which(datasets: DatasetStore) -> None:
    ds = datasets.open("ragged")
    ds.append([Row("a", [0.0, 1.0], 1), Row("b", [1.0, 0.0], 0), Row("c", [1.0], 1)])
    assert ds.read(upto=2).X.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    with pytest.raises(DatasetError, match="row 3 of this read has 1 features, the first has 2"):
        ds.read()  # never broadcast silently into the array


def test_a_failed_group_commit_fails_each_caller_and_a_retry_stores_once(tmp_path: Path) -> None:
    """Another connection holds the write lock while a group waits: every caller of the
    group gets the error (none is answered as stored); their retries store each row once."""
    import sqlite3

    from tests.fixtures.grouping import held_first_commit

    ds = Dataset("toy", tmp_path / "toy.sqlite3")
    ds._db.execute("PRAGMA busy_timeout = 50")  # give up on the lock at once, not in 10 s
    blocker = sqlite3.connect(tmp_path / "toy.sqlite3", isolation_level=None)
    results: dict[int, object] = {}

    def append(k: int) -> None:
        try:
            results[k] = ds.append([Row(f"ev-{k}", [float(k)], k), Row("shared", [0.0], 0)])
        except Exception as err:
            results[k] = err

    try:
        with held_first_commit(ds._group) as held:
            threads = [threading.Thread(target=append, args=(0,))]
            threads[0].start()
            held.entered.wait(10)
            blocker.execute("BEGIN EXCLUSIVE")  # the file is locked: this group cannot commit
            threads += [threading.Thread(target=append, args=(k,)) for k in range(1, 6)]
            for t in threads[1:]:
                t.start()
            held.queue(5)
            held.release()
            for t in threads:
                t.join(10)
        assert all(isinstance(r, sqlite3.OperationalError) for r in results.values()), results
        assert len(results) == 6 and ds._group.groups == 2  # one commit for the five
        blocker.execute("ROLLBACK")
        assert (
            sum(
                ds.append([Row(f"ev-{k}", [float(k)], k), Row("shared", [0.0], 0)])
                for k in range(6)
            )
            == 7
        )
        assert ds.count() == 7 and ds.duplicates() == 5
    finally:
        blocker.close()
        ds.close()
