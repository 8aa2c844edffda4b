"""A pinned model handle (``MLFN_MODEL_VERSION``) serves one version and ignores ``latest``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from mlfn.settings import Settings
from runtime.errors import ModelNotFoundError
from runtime.models import LocalModelStore, ModelHandle, open_model
from runtime.spec import ModelRef

pytestmark = pytest.mark.unit
X = np.zeros((2, 3))


def _const(label: int) -> DummyClassifier:
    return DummyClassifier(strategy="constant", constant=label).fit(X, [label, 1 - label])


def test_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_MODEL_VERSION", "3")
    assert Settings().models.model_version == 3
    monkeypatch.delenv("MLFN_MODEL_VERSION")
    assert Settings().models.model_version is None


def test_pinned_handle_loads_its_version_and_never_follows_latest(
    store: LocalModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlfn.models")
    store.publish("toy", _const(0))
    store.publish("toy", _const(1))  # latest is v2
    handle = ModelHandle(ModelRef(name="toy", poll_seconds=0.01), store, version=1)
    seen: list[int] = []
    handle.on_swap(lambda m: seen.append(m.version))
    handle.start()
    try:
        assert handle.ready and handle.current().version == 1
        assert handle.current().model.predict(X).tolist() == [0, 0]
        assert handle._thread is None, "a pinned handle does not poll"
        store.publish("toy", _const(1))
        assert handle.refresh() is False
        assert handle.current().version == 1
        assert "model pinned: not following latest" in caplog.text
        assert seen == [1]
    finally:
        handle.stop()


def test_open_model_pins_from_settings(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path / "models")
    for label in (0, 1, 0):
        store.publish("toy", _const(label))
    handle = open_model(
        ModelRef(name="toy"),
        Settings().updated(common={"home": tmp_path}, models={"model_version": 2}),
    )
    handle.start()
    try:
        assert handle.current().version == 2
    finally:
        handle.stop()
    unpinned = open_model(ModelRef(name="toy"), Settings().updated(common={"home": tmp_path}))
    unpinned.start()
    try:
        assert unpinned.current().version == 3
    finally:
        unpinned.stop()


def test_a_pin_to_a_missing_version_says_how_to_fix(store: LocalModelStore) -> None:
    store.publish("toy", _const(0))
    handle = ModelHandle(ModelRef(name="toy"), store, version=5, bootstrap=lambda s: None)
    with pytest.raises(ModelNotFoundError, match=r"no version 5; versions: 1.*pinned to v5"):
        handle.start()
