"""What `mlfn serve predict` does on a fresh clone: discover, open the model, start."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlfn.settings import Settings
from runtime import open_model
from runtime.registry import discover

pytestmark = pytest.mark.unit


def test_predict_becomes_ready_on_an_empty_store(tmp_path: Path) -> None:
    registry = discover("functions")
    assert {"preprocess", "predict", "predict-torch", "retrain"} <= set(registry.functions)
    ref = registry.get("predict").spec.model
    assert ref is not None
    handle = open_model(ref, Settings().updated(common={"home": tmp_path}))
    assert not handle.ready
    handle.start()
    try:
        assert handle.ready
        loaded = handle.current()
        assert loaded.version == 1 and loaded.metadata["extra"]["bootstrap"] is True
    finally:
        handle.stop()
    # a second instance (or a restart) loads version 1 and does not bootstrap again
    again = open_model(ref, Settings().updated(common={"home": tmp_path}))
    again.start()
    again.stop()
    assert [p.name for p in (tmp_path / "models" / "digits" / "versions").iterdir()] == ["1"]
