"""The closed loop end to end on the embedded broker.

Raw digits in chunks -> preprocess (invalid records dead-lettered with the reason) ->
features stored idempotently -> retrain per policy -> gate -> ``mlfn.model.published`` ->
predict swaps. A candidate trained on shuffled labels is rejected and never serves.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runtime.datasets import DatasetStore
from runtime.events import event_data
from tests.e2e.harness import Pipeline, digits_rows, on_dev
from tests.fixtures.platform import wait_for as wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

DEADLINE = 60.0


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    """The example pipeline under ``mlfn dev``, on a raw topic of this test's own."""
    raw = f"e2e-raw-{uuid.uuid4().hex[:8]}"
    os.environ["MLFN_E2E_RAW_TOPIC"] = raw  # read when the test package is imported
    with on_dev(tmp_path, raw) as p:
        yield p


def sample() -> list[list[float]]:
    from sklearn.datasets import load_digits

    X = load_digits().data[:8] / 16.0
    return np.asarray(X).tolist()


def decision(p: Pipeline, version: int) -> str:
    return str(p.models.info("digits", version).extra.get("gate", {}).get("decision"))


def test_the_loop_publishes_rejects_a_broken_candidate_and_switches_predictions(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    rows = sample()
    assert p.predict(rows)[0] == 1  # the bootstrap version serves first

    # chunk A, with two invalid records in it
    p.produce(digits_rows(0, 300))
    p.produce([{"pixels": [99] * 64, "label": 3}, b"not json at all"])
    p.produce(digits_rows(300, 600))
    wait_until(lambda: p.latest() >= 2, DEADLINE, "version 2 to be published")
    assert decision(p, 2) == "published"
    wait_until(lambda: p.predict(rows)[0] == 2, DEADLINE, "predict to serve version 2")

    dead = wait_until(lambda: len(p.dead_letters()) >= 2 and p.dead_letters(), 30, "2 dead letters")
    assert [h.get("ce_knativeerrorcode") for h, _ in dead] == ["400", "400"]
    # knativeerrordata is the sink's answer, base64-encoded as Knative does
    reasons = [base64.b64decode(h.get("ce_knativeerrordata", "")).decode() for h, _ in dead]
    assert any("pixels" in r for r in reasons), reasons  # names the offending field

    # chunk B: every training while the sabotage flag exists shuffles its labels
    sabotage = p.home / "sabotage"
    sabotage.touch()
    p.produce(digits_rows(600, 1200))
    wait_until(
        lambda: any(decision(p, v.version) == "rejected" for v in p.versions()),
        DEADLINE,
        "a rejected candidate",
    )
    sabotage.unlink()
    rejected = [v.version for v in p.versions() if decision(p, v.version) == "rejected"]
    assert p.latest() not in rejected
    for _ in range(20):
        assert p.predict(rows)[0] not in rejected

    # chunk C: a good candidate again
    p.produce(digits_rows(1200, 1797))
    wait_until(
        lambda: p.latest() > max(rejected) and decision(p, p.latest()) == "published",
        DEADLINE,
        "a version after the rejected one",
    )
    store = DatasetStore(p.settings.dataset_store_path)
    try:
        stored = [0]

        def all_stored() -> bool:
            stored[0] = store.open("digits").count()
            return stored[0] == 1797

        try:
            wait_until(all_stored, DEADLINE, "1,797 rows stored")
        except AssertionError as err:
            raise AssertionError(f"{err}: {stored[0]} stored") from None
    finally:
        store.close()
    # predictions switch to the newest version (more trainings may still land: follow them)
    version, predictions = wait_until(
        lambda: (r := p.predict(rows))[0] == p.latest() and r, DEADLINE, "predict on latest"
    )
    final = version
    assert decision(p, final) == "published" and final > max(rejected)
    assert np.mean(np.array(predictions) == np.arange(8)) >= 0.75

    # each version after the bootstrap is announced on the broker with its decision
    def announcements() -> dict[int, str] | None:
        events = [e for e in p.broker_events() if e["type"].startswith("mlfn.model.")]
        assert all(e["subject"] == "digits" for e in events)
        found = {event_data(e)["version"]: e["type"] for e in events}
        expected = {v.version: f"mlfn.model.{decision(p, v.version)}" for v in p.versions()[1:]}
        return found if found == expected else None

    wait_until(announcements, 30, "every version to be announced")
    accuracy = {v.version: v.metrics.get("accuracy") for v in p.versions()}
    assert all(accuracy[v] is not None and accuracy[v] < 0.5 for v in rejected)
    assert accuracy[final] is not None and accuracy[final] > 0.9
