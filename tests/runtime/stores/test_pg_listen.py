"""Pointer moves pushed by PostgreSQL (LISTEN/NOTIFY): a replica swaps without waiting
for its poll, and a listener that loses its connection reconnects and catches up.

Each "replica" has a :class:`Database` of its own (its own pool and listening
connection), as two processes would. Their poll interval is a minute, longer than
every deadline here: only a notification can make these tests pass.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from sklearn.linear_model import LogisticRegression

from runtime.errors import StoreUnavailableError
from runtime.models import ModelHandle
from runtime.spec import ModelRef
from runtime.stores.database import Database
from runtime.stores.listener import LISTEN_APPLICATION, PointerListener
from runtime.stores.pg_models import PgModelStore
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

SLOW_POLL = 60.0
"""Seconds between polls: far beyond the deadlines, so polling cannot pass the tests."""


def _model(seed: int) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 4))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


@pytest.fixture
def replicas(database_url: str) -> Iterator[tuple[PgModelStore, PgModelStore]]:
    """A publisher's store and a server's store, each on a database object of its own."""
    dbs = [Database(database_url), Database(database_url)]
    try:
        yield PgModelStore(dbs[0]), PgModelStore(dbs[1])
    finally:
        for db in dbs:
            db.close()


def _listener(store: PgModelStore) -> PointerListener:
    listener = store._listener
    assert listener is not None, "the handle did not ask the store for a watch"
    return listener


def test_a_publish_reaches_a_serving_replica_without_waiting_for_its_poll(
    replicas: tuple[PgModelStore, PgModelStore],
) -> None:
    publisher, server = replicas
    publisher.publish("toy", _model(0))
    handle = ModelHandle(ModelRef(name="toy", poll_seconds=SLOW_POLL), server)
    handle.start()
    try:
        assert handle.current().version == 1
        wait_for(lambda: _listener(server).listening, 10, "the server to LISTEN")
        publisher.publish("toy", _model(1))
        wait_for(lambda: handle.current().version == 2, 10, "the swap to v2 on NOTIFY")
        publisher.set_latest("toy", 1)  # a rollback is a pointer move too
        wait_for(lambda: handle.current().version == 1, 10, "the swap back to v1")
    finally:
        handle.stop()


def test_a_dropped_listener_reconnects_and_catches_up(
    replicas: tuple[PgModelStore, PgModelStore],
) -> None:
    publisher, server = replicas
    publisher.publish("toy", _model(0))
    handle = ModelHandle(ModelRef(name="toy", poll_seconds=SLOW_POLL), server)
    handle.start()
    try:
        listener = _listener(server)
        wait_for(lambda: listener.listening, 10, "the server to LISTEN")
        with psycopg.connect(publisher.db.url, autocommit=True) as conn:
            cut = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = current_database()",
                (LISTEN_APPLICATION,),
            ).fetchall()
        assert cut == [(True,)]
        publisher.publish("toy", _model(1))  # may land while nobody listens
        wait_for(lambda: listener.connects >= 2, 10, "the listener to reconnect")
        wait_for(lambda: handle.current().version == 2, 10, "v2 after the reconnection")
        publisher.publish("toy", _model(2))  # and the new connection hears the next one
        wait_for(lambda: handle.current().version == 3, 10, "v3 on the new connection")
    finally:
        handle.stop()


def test_a_move_while_the_database_was_unreachable_wakes_the_watch(
    replicas: tuple[PgModelStore, PgModelStore],
) -> None:
    publisher, server = replicas
    publisher.publish("toy", _model(0))
    attempts: list[int] = []

    def connect() -> psycopg.Connection[Any]:
        attempts.append(1)
        if len(attempts) == 1:  # the first attempt finds the database down
            publisher.publish("toy", _model(1))  # ... and the pointer moves meanwhile
            raise StoreUnavailableError("the database at test is unreachable: refused")
        return server.db.listen(application=LISTEN_APPLICATION)

    listener = PointerListener(server.db, connect=connect)
    watch = listener.watch("toy")
    try:
        assert watch.wait(10), "no wake-up after the listener connected"
        assert len(attempts) == 2 and listener.listening
        other = listener.watch("other")
        publisher.publish("toy", _model(2))
        assert watch.wait(10), "no wake-up for a publish"
        # the listener woke toy's watch before wait() returned: other's would be set by now
        assert not other.wait(0), "a move of toy woke the watch of another model"
        other.close()
    finally:
        watch.close()
        listener.stop()
    assert publisher.latest("toy") == 3


GEVENT_PROBE = textwrap.dedent(
    """
    import psycopg  # before gevent patches, as a preloading process may: psycopg's C wait
    from gevent import monkey; monkey.patch_all()
    import sys, time, gevent
    from sklearn.linear_model import LogisticRegression
    from runtime.models import ModelHandle
    from runtime.spec import ModelRef
    from runtime.stores.database import Database
    from runtime.stores.pg_models import PgModelStore

    url = sys.argv[1]
    store, publisher = PgModelStore(Database(url)), PgModelStore(Database(url))
    handle = ModelHandle(ModelRef(name="toy", poll_seconds=60), store)
    handle.start()
    ticks = []
    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)
    ticker = gevent.spawn(tick)
    deadline = time.monotonic() + 20
    while not (store._listener and store._listener.listening):
        assert time.monotonic() < deadline, "the listener did not LISTEN"
        gevent.sleep(0.01)
    start = time.monotonic()
    gevent.sleep(2.0)  # the loop runs the listener's greenlet meanwhile
    publisher.publish("toy", LogisticRegression().fit([[0.0], [1.0]], [0, 1]))
    while handle.current().version != 2:
        assert time.monotonic() < deadline, "no swap to v2"
        gevent.sleep(0.01)
    window = [t for t in ticks if start <= t <= start + 2.0]
    print(len(window))
    handle.stop(); ticker.kill(); store.db.close(); publisher.db.close()
    """
)


def test_under_gevent_the_listener_leaves_the_event_loop_responsive(
    replicas: tuple[PgModelStore, PgModelStore],
) -> None:
    publisher, _ = replicas
    publisher.publish("toy", _model(0))
    out = subprocess.run(
        [sys.executable, "-c", GEVENT_PROBE, publisher.db.url],
        capture_output=True,
        text=True,
        timeout=60,  # the listener of before this test held the loop: the probe hung
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    ticks = int(out.stdout.split()[-1])
    # a listener that waited in psycopg's C wait would hold the loop for every 0.5 s tick:
    # a handful of ticks in 2 s instead of about 200
    assert ticks >= 40, f"the event loop ran {ticks} ticks of 10 ms in 2 s while listening"
