"""``retrain``: store featurized digits durably; retrain per policy; publish through the gate.

Each ``mlfn.digits.features`` event adds one row to the ``digits`` dataset (idempotent on
the event id, so redeliveries add nothing). The retrain loop (:mod:`runtime.retraining`)
trains when the policy says so, in the background and one training at a time, scores
the candidate against the served version on a holdout neither trained on, and
publishes it only if it is not worse by more than the tolerance. It announces the
result on the broker: ``mlfn.model.published`` (``predict`` swaps to it) or
``mlfn.model.rejected``. A ``mlfn.retrain.requested`` event (subject ``digits``) asks for
a training now, whatever the thresholds say. A ping (``dev.knative.sources.ping``, from the
PingSource that ``mlfn render`` makes of ``every_seconds``, or ``mlfn dev``'s ping source)
wakes the function when it scaled to zero: the time trigger, from the stored state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from functions._digits import DATASET, FEATURES_TYPE, MODEL, DigitFeatures
from runtime import CloudEvent, Context, Row, event
from runtime.models import default_classifier
from runtime.retraining import (
    MODEL_PUBLISHED,
    MODEL_REJECTED,
    PING,
    RETRAIN_REQUESTED,
    FitFn,
    Progress,
    loop_for,
)


def fit_digits(X: NDArray[np.float64], y: NDArray[Any], progress: Progress) -> Any:
    """Fit the default classifier (multinomial logistic regression); report its iterations."""
    clf = default_classifier().fit(X, y.astype(np.int64))
    progress.iteration(int(np.max(clf.n_iter_)))
    return clf


def _event_time(ev: CloudEvent) -> datetime | None:
    raw = ev.get("time")
    if not raw:
        return None
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None


def store_features(ev: CloudEvent, ctx: Context, *, fit: FitFn = fit_digits) -> None:
    """Add the event's row to the dataset and tell the retrain loop (which may train).

    A ``mlfn.retrain.requested`` event asks the loop for a training instead.
    """
    if ev["type"] == PING:
        loop_for(ctx, dataset=DATASET, fit=fit).tick(f"ping {ev['id']}")
        return
    if ev["type"] == RETRAIN_REQUESTED:
        data = ev.get_data()
        why = data.get("reason") if isinstance(data, dict) else None
        loop_for(ctx, dataset=DATASET, fit=fit).request(str(why or f"event {ev['id']}"))
        return
    features = DigitFeatures.model_validate(ev.get_data())
    loop = loop_for(ctx, dataset=DATASET, fit=fit)
    when = _event_time(ev)
    row = (
        Row(ev["id"], features.features, features.label, time=when)
        if when is not None
        else Row(ev["id"], features.features, features.label)
    )
    loop.add([row])


@event(
    subscriptions=[
        {
            "name": "retrain-features",
            "broker": "default",
            "attributes": {"type": FEATURES_TYPE},
            # mlfn dev delivers up to 100 rows per request (a request per row costs the
            # platform more than storing the row); Knative's triggers send one at a time
            "batch": {"max_events": 100, "max_wait_ms": 20},
        },
        {
            "name": "retrain-requests",
            "broker": "default",
            "filters": [{"exact": {"type": RETRAIN_REQUESTED, "subject": MODEL}}],
        },
    ],
    emits=[MODEL_PUBLISHED, MODEL_REJECTED],
    retrain={
        "model": MODEL,
        "every_rows": 500,
        "every_seconds": 30,
        "min_rows": 50,
        "debounce_seconds": 0.2,
        "tolerance": 0.01,
        "holdout_fraction": 0.2,
    },
    resources={"cpu": "1", "memory": "1Gi"},
    # one instance takes every delivery in flight (the trigger sends up to 4 x 32) and
    # commits concurrent rows together; more instances would share one SQLite file
    scaling={"target": 200},
    # scales to zero: rows, pending counts and the time trigger live in the stores, a
    # PingSource wakes it on schedule, and single flight holds across replicas
    timeout_seconds=600,
)
def retrain(ev: CloudEvent, ctx: Context) -> None:
    """Store the features (idempotent on the event id); the loop retrains per policy.

    ``mlfn.retrain.requested`` (subject ``digits``, data ``{"reason": ...}``) trains now.

    Replies nothing: the loop announces each candidate on the broker when its training
    ends (``mlfn.model.published`` or ``mlfn.model.rejected``, subject ``digits``).
    """
    store_features(ev, ctx)
