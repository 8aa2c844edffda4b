"""The evaluation gate: a candidate is published only if it is not worse than the served model.

The candidate and the current model are scored on the same **holdout**: rows chosen by a
hash of their id (:func:`in_holdout`), so a row is held out for every training, always,
and no version trained by the loop has ever seen a holdout row. A current version trained
outside the loop (the bootstrap version, say) may have seen those rows; its holdout score
would flatter it, so it is compared on the score recorded in its own metadata instead.

:func:`judge` is the pure decision; :func:`publish_verdict` writes the version with the
decision and metrics in its metadata (a rejected candidate is kept for the record but the
``latest`` pointer never moves to it) and builds the CloudEvent announcing it:
``mlfn.model.published`` or ``mlfn.model.rejected``, subject = the model name.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.datasets import DataRange
from runtime.errors import ModelNotFoundError, ModelStoreError
from runtime.events import CloudEvent, new_event
from runtime.function import MODEL_PUBLISHED
from runtime.models.store import ModelStore, ModelVersion

__all__ = [
    "HOLDOUT_SCHEME",
    "MODEL_PUBLISHED",
    "MODEL_REJECTED",
    "Verdict",
    "current_baseline",
    "holdout_mask",
    "in_holdout",
    "judge",
    "publish_verdict",
    "score",
    "verdict_event",
]

log = logging.getLogger(__name__)

MODEL_REJECTED = "mlfn.model.rejected"
"""CloudEvent type announcing a candidate that failed the gate; ``subject`` is the model."""

HOLDOUT_SCHEME = "sha256(id)"
"""Recorded in each version's metadata: versions with the same scheme and fraction never
trained on each other's holdout rows, so their holdout scores are comparable."""

_BUCKETS = 10_000


def in_holdout(row_id: str, fraction: float) -> bool:
    """Whether the row with this id belongs to the holdout (stable across trainings).

    Example:
        >>> in_holdout("ev-1", 0.2) == in_holdout("ev-1", 0.2)
        True
    """
    digest = hashlib.sha256(row_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") % _BUCKETS < fraction * _BUCKETS


def holdout_mask(ids: Sequence[str], fraction: float) -> NDArray[np.bool_]:
    """A boolean mask over ``ids``: True for holdout rows."""
    return np.fromiter((in_holdout(i, fraction) for i in ids), dtype=bool, count=len(ids))


def score(model: Any, X: NDArray[Any], y: NDArray[Any]) -> dict[str, float]:
    """Accuracy of ``model.predict`` on ``(X, y)``, and the number of rows scored."""
    if len(y) == 0:
        return {"holdout_rows": 0.0}
    predicted = np.asarray(model.predict(X))
    return {"accuracy": float(np.mean(predicted == y)), "holdout_rows": float(len(y))}


@dataclass(frozen=True)
class Verdict:
    """The gate's decision about one candidate, with the figures behind it."""

    publish: bool
    reason: str
    metric: str
    candidate: float | None
    current: float | None
    current_version: int | None
    baseline: str
    """How the current score was found: ``holdout``, ``recorded`` (its metadata) or ``none``."""
    tolerance: float
    holdout_rows: int

    @property
    def decision(self) -> str:
        return "published" if self.publish else "rejected"

    def as_metadata(self) -> dict[str, Any]:
        """The verdict as plain JSON data, for the version's metadata and the event."""
        return {"decision": self.decision, **asdict(self)}


def judge(
    candidate: Mapping[str, float],
    current: Mapping[str, float] | None,
    *,
    tolerance: float,
    metric: str = "accuracy",
    current_version: int | None = None,
    baseline: str = "holdout",
    min_holdout_rows: int = 1,
) -> Verdict:
    """Publish iff the candidate's ``metric`` >= the current one's minus ``tolerance``.

    With no current model (or one without the metric) the candidate is published if it
    has a score at all. A candidate with fewer than ``min_holdout_rows`` scored rows is
    rejected: without evidence, the served model stays.

    Example:
        >>> judge({"accuracy": 0.95, "holdout_rows": 300}, {"accuracy": 0.955}, tolerance=0.01).publish
        True
        >>> judge({"accuracy": 0.10, "holdout_rows": 300}, {"accuracy": 0.95}, tolerance=0.01).reason
        'accuracy 0.1000 is below the current 0.9500 - tolerance 0.0100'
    """
    rows = int(candidate.get("holdout_rows", 0))
    cand = candidate.get(metric)
    cur = None if current is None else current.get(metric)
    base = baseline if cur is not None else "none"

    def verdict(publish: bool, reason: str) -> Verdict:
        return Verdict(publish, reason, metric, cand, cur, current_version, base, tolerance, rows)

    if cand is None or rows < min_holdout_rows:
        return verdict(
            False,
            f"the candidate has {rows} holdout rows (< {min_holdout_rows}) and no {metric}; "
            "lower holdout_fraction or wait for more data",
        )
    if cur is None:
        return verdict(True, f"no current {metric} to compare with; {metric} {cand:.4f}")
    if cand + 1e-12 >= cur - tolerance:
        return verdict(
            True, f"{metric} {cand:.4f} >= the current {cur:.4f} - tolerance {tolerance:.4f}"
        )
    return verdict(
        False, f"{metric} {cand:.4f} is below the current {cur:.4f} - tolerance {tolerance:.4f}"
    )


def current_baseline(
    store: ModelStore,
    name: str,
    X: NDArray[Any],
    y: NDArray[Any],
    *,
    fraction: float,
) -> tuple[dict[str, float] | None, int | None, str]:
    """Score the served version for the gate: ``(metrics, version, baseline)``.

    A version trained by the loop with the same holdout is scored on the holdout; any
    other version is judged on the metrics recorded in its metadata.
    """
    try:
        meta = store.info(name)
    except ModelNotFoundError:
        return None, None, "none"
    same_split = (
        meta.extra.get("holdout_scheme") == HOLDOUT_SCHEME
        and meta.extra.get("holdout_fraction") == fraction
    )
    if same_split and len(y):
        try:
            loaded = store.load(name, meta.version)
            return score(loaded.model, X, y), meta.version, "holdout"
        except (ModelStoreError, ValueError) as err:
            log.warning(
                "cannot score the current version on the holdout (%s); using its recorded metrics",
                err,
                extra={"model": name, "version": meta.version},
            )
    return dict(meta.metrics), meta.version, "recorded"


def publish_verdict(
    store: ModelStore,
    name: str,
    model: Any,
    verdict: Verdict,
    metrics: Mapping[str, float],
    *,
    backend: str = "sklearn",
    data: DataRange | None = None,
    extra: Mapping[str, Any] | None = None,
    keep_rejected: bool = True,
) -> ModelVersion | None:
    """Store the candidate with its verdict; move ``latest`` only if it was accepted.

    Returns the stored version, or None for a rejected candidate when ``keep_rejected``
    is False.
    """
    if not verdict.publish and not keep_rejected:
        return None
    return store.publish(
        name,
        model,
        backend=backend,
        metrics=dict(metrics),
        data=data,
        extra={**(extra or {}), "gate": verdict.as_metadata()},
        make_latest=verdict.publish,
    )


def verdict_event(
    name: str,
    verdict: Verdict,
    version: ModelVersion | None,
    metrics: Mapping[str, float],
    *,
    source: str,
    extra: Mapping[str, Any] | None = None,
) -> CloudEvent:
    """``mlfn.model.published`` / ``mlfn.model.rejected`` for ``name`` (subject = name).

    Data: ``model``, ``version`` (None for an unrecorded rejection), ``metrics`` and
    ``gate`` (the verdict), plus ``extra``.
    """
    data = {
        "model": name,
        "version": None if version is None else version.version,
        "metrics": dict(metrics),
        "gate": verdict.as_metadata(),
        **(extra or {}),
    }
    kind = MODEL_PUBLISHED if verdict.publish else MODEL_REJECTED
    return new_event(kind, source, data, subject=name)
