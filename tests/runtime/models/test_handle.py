from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from mlfn.settings import Settings
from runtime.errors import ModelNotFoundError, ModelStoreError
from runtime.models import LocalModelStore, ModelHandle, ModelStore, open_model, register_bootstrap
from runtime.spec import ModelRef
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.unit
X = np.zeros((2, 3))


def _const(label: int) -> DummyClassifier:
    return DummyClassifier(strategy="constant", constant=label).fit(X, [label, 1 - label])


def _boot(store: ModelStore) -> None:
    store.publish("toy", _const(0), extra={"bootstrap": True})


def test_start_bootstraps_an_empty_store_once(store: LocalModelStore) -> None:
    calls: list[int] = []

    def boot(s: ModelStore) -> None:
        calls.append(1)
        _boot(s)

    handles = [ModelHandle(ModelRef(name="toy"), store, bootstrap=boot) for _ in range(3)]
    threads = [threading.Thread(target=h.start) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert calls == [1]
        assert all(h.ready and h.current().version == 1 for h in handles)
        assert handles[0].current().metadata["extra"] == {"bootstrap": True}
    finally:
        for h in handles:
            h.stop()


def test_without_bootstrap_an_empty_store_says_how_to_fix(store: LocalModelStore) -> None:
    handle = ModelHandle(ModelRef(name="toy"), store)
    with pytest.raises(
        ModelNotFoundError, match=r"no published version.*register_bootstrap\('toy'\)"
    ):
        handle.start()
    assert not handle.ready
    with pytest.raises(ModelStoreError, match="not loaded yet"):
        handle.current()


def test_refresh_swaps_and_in_flight_snapshots_keep_their_model(store: LocalModelStore) -> None:
    _boot(store)
    handle = ModelHandle(ModelRef(name="toy", poll_seconds=3600), store)
    handle.start()
    try:
        in_flight = handle.current()
        assert handle.refresh() is False
        store.publish("toy", _const(1))
        assert handle.refresh() is True
        assert handle.current().version == 2
        assert handle.current().model.predict(X).tolist() == [1, 1]
        assert in_flight.version == 1 and in_flight.model.predict(X).tolist() == [0, 0]
        store.set_latest("toy", 1)  # rollback reaches serving too
        assert handle.refresh() is True and handle.current().version == 1
    finally:
        handle.stop()


def test_poll_picks_up_new_versions_and_stops_promptly(store: LocalModelStore) -> None:
    _boot(store)
    seen: list[int] = []
    handle = ModelHandle(ModelRef(name="toy", poll_seconds=0.02), store)
    handle.on_swap(lambda m: seen.append(m.version))
    handle.start()
    thread = handle._thread
    assert thread is not None and thread.is_alive()
    store.publish("toy", _const(1))
    wait_for(lambda: handle.current().version == 2, what="the poll to load v2")
    handle.stop(timeout=2)
    assert not thread.is_alive()
    assert seen == [1, 2]


def test_backend_mismatch_is_a_clear_error(store: LocalModelStore) -> None:
    _boot(store)
    handle = ModelHandle(ModelRef(name="toy", backend="torch"), store)
    with pytest.raises(
        ModelStoreError, match="published with backend 'sklearn' but the function declares 'torch'"
    ):
        handle.start()


def test_open_model_uses_settings_and_the_registered_hook(tmp_path: Path) -> None:
    register_bootstrap("toy-registered")(
        lambda s: s.publish("toy-registered", _const(1), extra={"bootstrap": True})
    )
    handle = open_model(
        ModelRef(name="toy-registered"), Settings().updated(common={"home": tmp_path})
    )
    handle.start()
    try:
        assert handle.current().version == 1
        assert (tmp_path / "models" / "toy-registered" / "latest").read_text() == "1\n"
    finally:
        handle.stop()


def test_bootstrap_can_be_turned_off_in_settings(tmp_path: Path) -> None:
    register_bootstrap("toy-off")(lambda s: s.publish("toy-off", _const(1)))
    handle = open_model(
        ModelRef(name="toy-off"),
        Settings().updated(common={"home": tmp_path}, models={"model_bootstrap": False}),
    )
    with pytest.raises(ModelNotFoundError, match="no bootstrap hook"):
        handle.start()


def test_a_broken_version_is_logged_and_the_loaded_one_keeps_serving(
    store: LocalModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlfn.models")
    _boot(store)
    handle = ModelHandle(ModelRef(name="toy", poll_seconds=0.02), store)
    handle.start()
    try:
        store.put("toy", {"model.skops": b"not a model"}, backend="sklearn")
        wait_for(lambda: "model poll failed" in caplog.text, what="the poll to log the failure")
        assert handle.current().version == 1
        store.publish("toy", _const(1))
        wait_for(lambda: handle.current().version == 3, what="the poll to load v3")
        assert caplog.text.count("model poll failed") == 1  # logged once, not every tick
    finally:
        handle.stop()
    assert "model poll stopped" in caplog.text
