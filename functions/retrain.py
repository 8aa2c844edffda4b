"""``retrain``: store featurized digits durably, train on them, publish a new version."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from functions._digits import DATASET, FEATURES_TYPE, MODEL, PUBLISHED_TYPE, DigitFeatures
from runtime import CloudEvent, Context, DatasetStore, ModelStore, Row, event, new_event
from runtime.models import model_store, train_classifier

MIN_ROWS = 20
"""Rows (with labels, of at least two classes) needed before the first training."""

log = logging.getLogger("functions.retrain")


@lru_cache(maxsize=8)
def _datasets_at(root: Path) -> DatasetStore:
    return DatasetStore(root)  # one per path: its SQLite connection lives with the process


def _stores(ctx: Context) -> tuple[ModelStore, DatasetStore]:
    """The stores the runtime put in ``ctx``, else the ones the settings name."""
    models = ctx.models if isinstance(ctx.models, ModelStore) else model_store(ctx.settings)
    datasets = (
        ctx.datasets
        if isinstance(ctx.datasets, DatasetStore)
        else _datasets_at(ctx.settings.dataset_store_path)
    )
    return models, datasets


@event(
    subscriptions=[{"broker": "default", "attributes": {"type": FEATURES_TYPE}}],
    emits=[PUBLISHED_TYPE],
    resources={"cpu": "1", "memory": "1Gi"},
    timeout_seconds=600,
)
def retrain(ev: CloudEvent, ctx: Context) -> CloudEvent | None:
    """Append the features (idempotent on the event id), retrain, publish a version.

    Replies ``mlfn.model.published`` with the model, version and metrics; replies
    nothing while fewer than ``MIN_ROWS`` labelled rows are stored, or when the event
    was a redelivery that added no row.
    """
    features = DigitFeatures.model_validate(ev.get_data())
    models, datasets = _stores(ctx)
    ds = datasets.open(DATASET)
    added = ds.append([Row(ev["id"], features.features, features.label)])
    if not added:
        log.info("redelivered event: row already stored", extra={"event_id": ev["id"]})
        return None
    data = ds.read()
    if len(data.y) < MIN_ROWS or len(set(data.y.tolist())) < 2:
        log.info("not enough labelled rows to train yet", extra={"rows": len(data.y)})
        return None
    result = train_classifier(data.X, data.y)
    published = models.publish(MODEL, result.model, metrics=result.metrics, data=data.range)
    log.info(
        "published a new model version",
        extra={"model": MODEL, "version": published.version, **result.metrics},
    )
    reply: dict[str, Any] = {
        "model": MODEL,
        "version": published.version,
        "metrics": result.metrics,
        "rows": len(data.y),
    }
    return new_event(PUBLISHED_TYPE, "/mlfn/functions/retrain", reply, subject=MODEL)
