from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sklearn.datasets import load_digits

from functions._digits import PredictRequest
from functions.predict import predict
from functions.preprocess import preprocess
from functions.retrain import MIN_ROWS, retrain
from runtime import CloudEvent, Context, DatasetStore, new_event
from runtime.function import function_of
from runtime.models import LocalModelStore, ModelHandle
from runtime.settings import Settings
from runtime.spec import ModelRef

pytestmark = pytest.mark.unit


def _features(n: int, start: int = 0) -> list[CloudEvent]:
    """Real digits rows through preprocess, as the broker would deliver them to retrain."""
    X, y = load_digits(return_X_y=True)
    return [
        preprocess(
            new_event(
                "raw", "/digits.raw", {"pixels": X[i].tolist(), "label": int(y[i])}, id=f"r{i}"
            )
        )
        for i in range(start, start + n)
    ]


def _ctx(tmp_path: Path, store: LocalModelStore, datasets: DatasetStore) -> Context:
    spec = function_of(retrain).spec  # type: ignore[union-attr]
    return Context(spec, Settings(home=tmp_path), logging.getLogger("test"), store, datasets)


def test_retrain_stores_rows_idempotently_and_publishes(
    tmp_path: Path, store: LocalModelStore, datasets: DatasetStore
) -> None:
    ctx = _ctx(tmp_path, store, datasets)
    events = _features(300)
    for ev in events[: MIN_ROWS - 1]:
        assert retrain(ev, ctx) is None  # too few rows to train yet
    reply = None
    for ev in events[MIN_ROWS - 1 :: 40]:
        reply = retrain(ev, ctx)
    assert reply is not None and reply["type"] == "mlfn.model.published"
    assert reply["subject"] == "digits"
    data = reply.get_data()
    assert data["model"] == "digits" and data["version"] == store.latest("digits")
    assert retrain(events[0], ctx) is None  # a redelivery adds no row and trains nothing
    assert datasets.open("digits").count() == MIN_ROWS - 1 + len(events[MIN_ROWS - 1 :: 40])
    meta = store.info("digits")
    assert meta.data is not None and meta.data.first_id == events[0]["id"]
    assert meta.data.rows == data["rows"] and meta.metrics["train_rows"] > 0


def test_a_served_handle_swaps_to_the_retrained_version(
    tmp_path: Path, store: LocalModelStore, datasets: DatasetStore
) -> None:
    ctx = _ctx(tmp_path, store, datasets)
    ds = datasets.open("digits")
    from runtime import Row

    events = _features(600)
    ds.append([Row(e["id"], e.get_data()["features"], e.get_data()["label"]) for e in events[:-1]])
    reply = retrain(events[-1], ctx)
    assert reply is not None
    version = reply.get_data()["version"]
    assert reply.get_data()["metrics"]["accuracy"] > 0.9
    handle = ModelHandle(ModelRef(name="digits", poll_seconds=3600), store)
    handle.start()
    try:
        assert handle.current().version == version
        X, y = load_digits(return_X_y=True)
        (resp,) = predict([PredictRequest(instances=(X[1700:] / 16).tolist())], handle.current())
        assert sum(
            int(p == t) for p, t in zip(resp.predictions, y[1700:], strict=True)
        ) > 0.85 * len(y[1700:])
    finally:
        handle.stop()


def test_retrain_opens_stores_from_settings_when_the_context_has_none(tmp_path: Path) -> None:
    spec = function_of(retrain).spec  # type: ignore[union-attr]
    ctx = Context(spec, Settings(home=tmp_path), logging.getLogger("test"))
    for ev in _features(MIN_ROWS):
        reply = retrain(ev, ctx)
    assert reply is not None and reply.get_data()["version"] == 1
    assert (tmp_path / "models" / "digits" / "latest").exists()
    assert (tmp_path / "datasets" / "digits.sqlite3").exists()
