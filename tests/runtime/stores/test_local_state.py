"""The local retraining state (``mlfn dev``): survives the process, single flight by flock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mlfn.settings import Settings
from runtime.stores import close_all, open_stores
from runtime.stores.retrain_state import LocalRetrainState

pytestmark = pytest.mark.unit


def test_state_outlives_the_object_and_counts_failures(tmp_path: Path) -> None:
    state = LocalRetrainState(tmp_path)
    since = state.get("digits").since
    state.started("digits")
    state.finished("digits", "failed", ok=False, error="boom")
    again = LocalRetrainState(tmp_path).get("digits")  # a new process reads the file
    assert again.since == since and again.failures == 1 and again.last_error == "boom"
    assert again.trainings == 1 and again.epoch == again.last_started
    state.finished("digits", "published", ok=True)
    assert LocalRetrainState(tmp_path).get("digits").failures == 0


def test_single_flight_excludes_a_second_trainer(tmp_path: Path) -> None:
    state = LocalRetrainState(tmp_path)
    seen: list[bool] = []
    with state.single_flight("digits") as held:
        assert held

        def other() -> None:
            with LocalRetrainState(tmp_path).single_flight("digits", wait=False) as got:
                seen.append(got)

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen == [False]
    with state.single_flight("digits", wait=False) as held:
        assert held


def test_without_a_database_url_the_stores_stay_local(tmp_path: Path) -> None:
    stores = open_stores(Settings().updated(common={"home": tmp_path}))
    try:
        assert stores.database is None and repr(stores.retrain).startswith("LocalRetrainState")
        stores.check()  # nothing to check
        assert (tmp_path / "models").as_posix() in repr(stores.models)
    finally:
        close_all()
