"""``functions.retrain``: rows stored idempotently; the retrain loop trains per its policy."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn.datasets import load_digits

from functions._digits import PredictRequest
from functions.predict import predict
from functions.preprocess import preprocess
from functions.retrain import fit_digits, retrain
from mlfn.settings import Settings
from runtime import CloudEvent, Context, DatasetStore, new_event
from runtime.function import function_of
from runtime.models import LocalModelStore, ModelHandle
from runtime.retraining import close_loops, loop_for
from runtime.spec import ModelRef

pytestmark = pytest.mark.unit

DEADLINE = 30.0


@pytest.fixture(autouse=True)
def _loops() -> Iterator[None]:
    yield
    close_loops()


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


def _ctx(tmp_path: Path, store: LocalModelStore | None, datasets: DatasetStore | None) -> Context:
    spec = function_of(retrain).spec  # type: ignore[union-attr]
    return Context(
        spec,
        Settings().updated(common={"home": tmp_path}),
        logging.getLogger("test"),
        store,
        datasets,
    )


def _every_rows() -> int:
    policy = function_of(retrain).spec.retrain  # type: ignore[union-attr]
    assert policy is not None and policy.every_rows is not None
    return policy.every_rows


def test_retrain_stores_rows_idempotently_and_the_loop_publishes_at_the_threshold(
    tmp_path: Path, store: LocalModelStore, datasets: DatasetStore
) -> None:
    ctx = _ctx(tmp_path, store, datasets)
    announced: list[CloudEvent] = []
    loop = loop_for(ctx, dataset="digits", fit=fit_digits, emit=announced.append)
    every = _every_rows()
    events = _features(every)
    for ev in events:
        assert retrain(ev, ctx) is None  # the loop announces on the broker, not in the reply
    assert retrain(events[0], ctx) is None  # a redelivery adds no row
    [outcome] = loop.wait_outcomes(1, DEADLINE)
    assert outcome.decision == "published", outcome.reason
    assert datasets.open("digits").count() == every
    [ev] = announced
    assert (ev["type"], ev["subject"]) == ("mlfn.model.published", "digits")
    assert ev.get_data()["version"] == store.latest("digits") == 1
    meta = store.info("digits")
    assert meta.data is not None and meta.data.first_id == events[0]["id"]
    assert meta.data.rows == every and 0 < meta.metrics["train_rows"] < every
    assert meta.metrics["accuracy"] > 0.9


def test_a_served_handle_swaps_to_the_retrained_version(
    tmp_path: Path, store: LocalModelStore, datasets: DatasetStore
) -> None:
    ctx = _ctx(tmp_path, store, datasets)
    loop = loop_for(ctx, dataset="digits", fit=fit_digits, emit=lambda ev: None)
    for ev in _features(_every_rows()):
        retrain(ev, ctx)
    [outcome] = loop.wait_outcomes(1, DEADLINE)
    handle = ModelHandle(ModelRef(name="digits", poll_seconds=3600), store)
    handle.start()
    try:
        assert handle.current().version == outcome.version
        X, y = load_digits(return_X_y=True)
        (resp,) = predict([PredictRequest(instances=(X[1700:] / 16).tolist())], handle.current())
        assert sum(
            int(p == t) for p, t in zip(resp.predictions, y[1700:], strict=True)
        ) > 0.85 * len(y[1700:])
    finally:
        handle.stop()


def test_retrain_opens_stores_from_settings_when_the_context_has_none(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, None, None)
    for ev in _features(3):
        assert retrain(ev, ctx) is None
    assert (tmp_path / "datasets" / "digits.sqlite3").exists()
    loop = loop_for(ctx, dataset="digits", fit=fit_digits)
    assert loop.driver.pending_rows == 3


def test_a_retrain_request_event_trains_below_the_threshold(
    tmp_path: Path, store: LocalModelStore, datasets: DatasetStore
) -> None:
    ctx = _ctx(tmp_path, store, datasets)
    loop = loop_for(ctx, dataset="digits", fit=fit_digits, emit=lambda ev: None)
    for ev in _features(100):
        retrain(ev, ctx)
    assert loop.outcomes == []
    request = new_event(
        "mlfn.retrain.requested", "/ops", {"reason": "new labels"}, subject="digits"
    )
    assert retrain(request, ctx) is None
    [outcome] = loop.wait_outcomes(1, DEADLINE)
    assert outcome.ticket.reason == "requested: new labels"
    assert outcome.decision == "published" and store.latest("digits") == 1


def test_retrain_subscribes_to_features_and_to_requests_for_its_model() -> None:
    subs = function_of(retrain).spec.subscriptions  # type: ignore[union-attr]
    assert [s.name for s in subs] == ["retrain-features", "retrain-requests"]
    assert subs[1].filters == ({"exact": {"type": "mlfn.retrain.requested", "subject": "digits"}},)


def test_a_batch_with_an_invalid_event_stores_every_valid_row_and_answers_400(
    tmp_path: Path,
) -> None:
    """A batch trigger delivers many features events in one request: one the function
    refuses must not cost the rows of the others (the retries and the dead letter see the
    400; the rows after it are stored all the same)."""
    from runtime import events
    from runtime.server import Request, create_app

    settings = Settings().updated(common={"home": tmp_path})
    app = create_app(function_of(retrain), settings)  # type: ignore[arg-type]
    try:
        assert app.wait_ready(DEADLINE), app.load_error
        good = _features(4)
        bad = new_event("mlfn.digits.features", "/t", {"features": [2.0] * 64}, id="bad")
        msg = events.to_http_batch([good[0], good[1], bad, good[2], good[3]])
        headers = {k.lower(): v for k, v in msg.headers.items()}
        r = app.handle(Request("POST", "/", headers, msg.body))
        assert r.status == 400, r.body
        assert b"data.features" in r.body  # the refused event's field
        rows = DatasetStore(settings.dataset_store_path).open("digits")
        assert rows.read().ids == [ev["id"] for ev in good]
        r = app.handle(Request("POST", "/", headers, msg.body))  # the dispatcher's retry
        assert r.status == 400 and rows.count() == 4 and rows.duplicates() == 4
    finally:
        app.close()
