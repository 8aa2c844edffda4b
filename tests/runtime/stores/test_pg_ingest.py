"""Ingest into PostgreSQL: concurrent appends commit together, exactly once, or fail together."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from runtime.datasets import DatasetError, Row
from runtime.errors import StoreUnavailableError
from runtime.stores.database import Database
from runtime.stores.pg_datasets import PgDataset, PgDatasetStore
from tests.fixtures.grouping import held_first_commit, join, run_all
from tests.fixtures.postgres import PostgresServer, running_postgres

pytestmark = pytest.mark.integration


def stored_ids(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM mlfn_dataset_rows ORDER BY seq")]


@pytest.fixture
def dataset(database_url: str) -> Iterator[PgDataset]:
    db = Database(database_url, timeout=2.0)
    yield PgDatasetStore(db).open("digits")
    db.close()


def test_appends_in_flight_share_one_statement_and_each_counts_its_own(
    dataset: PgDataset, database_url: str
) -> None:
    with held_first_commit(dataset._group) as held:
        first, first_threads = run_all([lambda: dataset.append([Row("first", [0.5] * 64, 1)])])
        held.entered.wait(10)
        # 20 callers queue behind it; two of them bring the same event (a redelivery
        # racing the original): the group stores it once and counts it for one caller
        calls = [
            lambda i=i: dataset.append([Row(f"ev-{i}", [i / 20] * 64, i % 10)]) for i in range(20)
        ]
        calls += [lambda: dataset.append([Row("ev-3", [0.0] * 64, 3)])]
        out, threads = run_all(calls)
        held.queue(21)
        held.release()
        join([*first_threads, *threads])
    assert first == [1]
    assert sorted(out) == [0] + [1] * 20
    assert (dataset._group.groups, dataset._group.items) == (2, 22)  # one commit for 21
    ids = stored_ids(database_url)
    assert sorted(ids) == sorted(["first", *(f"ev-{i}" for i in range(20))])
    data = dataset.read()
    assert data.X.shape == (21, 64) and data.X[ids.index("ev-7")].tolist() == [7 / 20] * 64
    # the same rows again, in another group: all duplicates
    assert dataset.append([Row(f"ev-{i}", [0.0] * 64, 0) for i in range(20)]) == 0
    assert dataset.count() == 21


def test_a_large_group_goes_as_arrays_and_keeps_every_value(dataset: PgDataset) -> None:
    rows = [
        Row(f"r{i:03}", [float(i), -0.0, float("nan"), 1e-310], {"digit": i}) for i in range(300)
    ]
    rows.append(Row("unlabelled", [1.0, 2.0, 3.0, 4.0], None))
    assert dataset.append(rows) == 301
    data = dataset.read()
    assert data.y.tolist() == [{"digit": i} for i in range(300)]  # unlabelled left out
    assert data.X[5, 0] == 5.0 and data.X[0, 3] == 1e-310 and str(data.X[0, 1]) == "-0.0"
    assert dataset.count() == 301 and dataset.read(labelled_only=False).ids[-1] == "unlabelled"


def test_a_row_the_database_refuses_fails_only_the_call_that_brought_it(
    dataset: PgDataset,
) -> None:
    with held_first_commit(dataset._group) as held:
        _, first = run_all([lambda: dataset.append([Row("first", [0.0], 1)])])
        held.entered.wait(10)
        out, threads = run_all(
            [
                lambda: dataset.append([Row("good-1", [1.0], 1)]),
                lambda: dataset.append([Row("bad", [1.0], "nul \x00 in a label")]),
                lambda: dataset.append([Row("good-2", [2.0], 2)]),
            ]
        )
        held.queue(3)
        held.release()
        join([*first, *threads])
    assert out[0] == 1 and out[2] == 1
    assert isinstance(out[1], DatasetError) and "refused a row of dataset 'digits'" in str(out[1])
    assert sorted(dataset.read().ids) == ["first", "good-1", "good-2"]
    with pytest.raises(DatasetError, match="features must be a list of numbers"):
        dataset.append([Row("words", ["one", "two"], 1)])  # type: ignore[list-item]
    with pytest.raises(DatasetError, match="empty id"):
        dataset.append([Row("", [0.0], 1)])


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of the test's own: it is stopped mid-group and started again."""
    with running_postgres() as server:
        yield server


def test_the_database_going_down_mid_group_fails_every_caller_and_stores_none_twice(
    own_server: PostgresServer,
) -> None:
    url = own_server.create_database()
    db = Database(url, timeout=1.0)
    try:
        ds = PgDatasetStore(db).open("digits")
        assert ds.append([Row("before", [0.0], 0)]) == 1
        batches = [[Row(f"ev-{k}-{i}", [float(i)], i) for i in range(3)] for k in range(6)]
        with held_first_commit(ds._group) as held:
            lead, first = run_all([lambda: ds.append(batches[0])])
            held.entered.wait(10)
            own_server.stop()  # the database goes away while a group is queued
            out, threads = run_all([lambda b=b: ds.append(b) for b in batches[1:]])
            held.queue(5)
            held.release()
            join([*first, *threads])
        assert all(isinstance(e, StoreUnavailableError) for e in lead + out), (lead, out)
        assert "is unreachable" in str(out[0]) and "mlfn retries" in str(out[0])
        own_server.start()
        # the deliveries are retried: every row is stored once, a second retry adds nothing
        assert sum(ds.append(b) for b in batches) == 18
        assert sum(ds.append(b) for b in batches) == 0
        ids = stored_ids(url)
        assert len(ids) == len(set(ids)) == 19
    finally:
        db.close()


def test_the_count_follows_every_way_of_appending_and_each_watermark(
    dataset: PgDataset, database_url: str
) -> None:
    def rows(prefix: str, n: int) -> list[Row]:
        return [Row(f"{prefix}-{i:05}", [float(i)], i % 10) for i in range(n)]

    assert dataset.count() == 0
    assert dataset.append(rows("few", 2)) == 2  # one VALUES statement
    assert dataset.append(rows("many", 50)) == 50  # the arrays statement
    assert dataset.append(rows("chunks", 4500)) == 4500  # three statements, one transaction
    assert dataset.append(rows("many", 50) + rows("more", 3)) == 3  # duplicates add nothing
    assert dataset.count() == 4555
    seqs = _seqs(database_url)
    mark = seqs[51]  # after "few" and "many"
    assert dataset.count_since(mark) == 4503
    assert dataset.append(rows("late", 7)) == 7
    assert dataset.count_since(mark) == 4510  # the same watermark again: counted from the total
    assert dataset.count_since(seqs[-1]) == 7
    with psycopg.connect(database_url) as conn:  # one truth: the count agrees with the rows
        (n,) = conn.execute("SELECT COUNT(*) FROM mlfn_dataset_rows").fetchone() or (0,)
    assert dataset.count() == n == 4562


def _seqs(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM mlfn_dataset_rows ORDER BY seq")]


def test_a_database_from_before_the_counts_gets_them_from_its_rows(database_url: str) -> None:
    db = Database(database_url, timeout=2.0)
    PgDatasetStore(db).open("digits").append([Row(f"ev-{i}", [1.0], 1) for i in range(12)])
    db.close()
    with psycopg.connect(database_url) as conn:  # as a version without the table left it
        conn.execute("DROP TABLE mlfn_dataset_counts")
    db = Database(database_url, timeout=2.0)
    try:
        ds = PgDatasetStore(db).open("digits")
        assert ds.count() == 12
        assert ds.append([Row("ev-new", [1.0], 1)]) == 1 and ds.count() == 13
    finally:
        db.close()


def test_labels_read_back_as_they_were_written(dataset: PgDataset) -> None:
    labels = [0, -3, 2**70, "seven", 1.5, True, {"digit": 4}]
    dataset.append([Row(f"ev-{i}", [1.0], label) for i, label in enumerate(labels)])
    assert dataset.read().y.tolist() == labels
