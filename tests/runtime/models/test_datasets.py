from __future__ import annotations

import threading

import pytest

from runtime.datasets import DatasetError, DatasetStore, Row

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
