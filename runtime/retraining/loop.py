"""The retrain loop of one model: store rows, retrain per policy, gate, publish, announce.

:class:`RetrainLoop` ties the pieces together. Rows go into the dataset store (idempotent
on the event id); the :class:`~runtime.retraining.driver.RetrainDriver` decides when to
train; each training reads every stored row, holds out the rows :func:`in_holdout`
picks, fits the user's ``fit`` on the rest, scores the candidate and the served version on
the holdout, lets the gate decide, stores the version with the verdict in its metadata,
and announces ``mlfn.model.published`` (inference functions swap to it) or
``mlfn.model.rejected``.

A retrain function keeps one loop per process with :func:`loop_for`::

    @event(subscriptions=[...], retrain={"model": "digits", "every_rows": 300})
    def retrain(ev: CloudEvent, ctx: Context) -> None:
        loop_for(ctx, dataset="digits", fit=fit_digits).add([Row(ev["id"], x, y)])
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.context import Context
from runtime.datasets import Dataset, DatasetStore, Row
from runtime.errors import ModelNotFoundError, SpecError
from runtime.models.store import ModelStore
from runtime.retraining.driver import RetrainDriver
from runtime.retraining.emit import Emitter, default_emitters
from runtime.retraining.gate import (
    HOLDOUT_SCHEME,
    Verdict,
    current_baseline,
    holdout_mask,
    judge,
    publish_verdict,
    score,
    verdict_event,
)
from runtime.retraining.policy import Ticket
from runtime.retraining.progress import METRICS, Progress, TrainingMetrics
from runtime.spec import RetrainPolicy

__all__ = ["RETRAIN_REQUESTED", "FitFn", "Outcome", "RetrainLoop", "close_loops", "loop_for"]

RETRAIN_REQUESTED = "mlfn.retrain.requested"
"""CloudEvent type asking for a training now (``subject``: the model; data may say why)."""

log = logging.getLogger(__name__)

FitFn = Callable[[NDArray[np.float64], NDArray[Any], Progress], Any]
"""``fit(X, y, progress) -> model``: the user's training; the model needs ``predict(X)``."""


@dataclass(frozen=True)
class Outcome:
    """What one training ended in.

    ``decision`` is ``published``, ``rejected``, ``skipped`` (too little data) or ``failed``.
    ``started``/``finished`` are wall-clock times (``time.time()``).
    """

    ticket: Ticket
    decision: str
    reason: str
    version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    verdict: Verdict | None = None
    phases: dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0


class RetrainLoop:
    """Retrains one model from one dataset, per its policy, through the gate.

    Args:
        policy: the function's retrain policy (model name, triggers, tolerance, holdout).
        models: the model store.
        dataset: the dataset rows accumulate in.
        fit: the user's training function.
        emit: where announcements go (see :mod:`runtime.retraining.emit`).
        backend: the model store backend of the models ``fit`` returns.
        source: the CloudEvent ``source`` of announcements.
        keep_rejected: store rejected candidates (never as latest) for the record.
        min_train_rows: a training with fewer training rows (or one class) is skipped.
        metrics: Prometheus metrics (default: the loop's registry).
        clock: monotonic clock for the scheduler.
    """

    def __init__(
        self,
        policy: RetrainPolicy,
        *,
        models: ModelStore,
        dataset: Dataset,
        fit: FitFn,
        emit: Emitter,
        backend: str = "sklearn",
        source: str = "/mlfn/retrain",
        keep_rejected: bool = True,
        min_train_rows: int = 20,
        metrics: TrainingMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.models = models
        self.dataset = dataset
        self.fit = fit
        self.emit = emit
        self.backend = backend
        self.source = source
        self.keep_rejected = keep_rejected
        self.min_train_rows = min_train_rows
        self.metrics = metrics or METRICS
        self._outcomes: deque[Outcome] = deque(maxlen=100)
        self._last_row_at: float | None = None
        self._cond = threading.Condition()
        self.driver = RetrainDriver(
            policy, self._train, clock=clock, pending_rows=self._untrained_rows()
        )

    @property
    def model(self) -> str:
        return self.policy.model

    def start(self) -> RetrainLoop:
        self.driver.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        return self.driver.stop(timeout)

    def _untrained_rows(self) -> int:
        """Rows stored after the data range of the served version (all, if unknown)."""
        try:
            meta = self.models.info(self.model)
        except ModelNotFoundError:
            return self.dataset.count()
        if meta.data is not None and meta.data.dataset == self.dataset.name:
            return self.dataset.count_since(meta.data.last_seq)
        return self.dataset.count()

    # --- inputs -----------------------------------------------------------------

    def add(self, rows: Sequence[Row]) -> int:
        """Store rows (a row whose id is stored already is skipped); returns how many were new."""
        added = self.dataset.append(rows)
        if added:
            self._last_row_at = time.time()
        self.driver.add_rows(added)
        self.metrics.pending.labels(self.model).set(self.driver.pending_rows)
        return added

    def request(self, reason: str = "requested") -> None:
        """Train as soon as the debounce allows, whatever the thresholds say."""
        self.driver.request(f"requested: {reason}")

    # --- results ----------------------------------------------------------------

    @property
    def outcomes(self) -> list[Outcome]:
        """The last 100 outcomes, oldest first."""
        with self._cond:
            return list(self._outcomes)

    def wait_outcomes(self, n: int, timeout: float) -> list[Outcome]:
        """Wait until ``n`` trainings ended in total; returns the outcomes (maybe fewer)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._outcomes) >= n, timeout)
            return list(self._outcomes)

    # --- one training -----------------------------------------------------------

    def _train(self, ticket: Ticket) -> Outcome:
        started = time.time()
        try:
            outcome = self._train_gated(ticket, started)
        except Exception as err:
            outcome = Outcome(
                ticket,
                "failed",
                f"{type(err).__name__}: {err}",
                started=started,
                finished=time.time(),
            )
            self._record(outcome)
            raise
        self._record(outcome)
        return outcome

    def _record(self, outcome: Outcome) -> None:
        with self._cond:
            self._outcomes.append(outcome)
            self._cond.notify_all()

    def _train_gated(self, ticket: Ticket, started: float) -> Outcome:
        fraction = self.policy.holdout_fraction
        progress = Progress(self.model, rows=0, metrics=self.metrics)
        with progress.phase("read"):
            data = self.dataset.read()
            progress.set_rows(len(data.y))
            mask = holdout_mask(data.ids, fraction)
            X_tr, y_tr = data.X[~mask], data.y[~mask]
            X_ho, y_ho = data.X[mask], data.y[mask]
        if len(y_tr) < self.min_train_rows or len(np.unique(y_tr)) < 2:
            reason = (
                f"{len(y_tr)} training rows of {len(np.unique(y_tr))} classes: need at least "
                f"{self.min_train_rows} rows of 2 classes"
            )
            progress.finish("skipped")
            return Outcome(
                ticket,
                "skipped",
                reason,
                phases=dict(progress.phases),
                started=started,
                finished=time.time(),
            )
        try:
            with progress.phase("fit"):
                candidate = self.fit(X_tr, y_tr, progress)
            with progress.phase("evaluate"):
                cand = score(candidate, X_ho, y_ho)
                current, current_version, baseline = current_baseline(
                    self.models, self.model, X_ho, y_ho, fraction=fraction
                )
                verdict = judge(
                    cand,
                    current,
                    tolerance=self.policy.tolerance,
                    current_version=current_version,
                    baseline=baseline,
                )
            metrics = {
                **cand,
                "train_rows": float(len(y_tr)),
                "fit_seconds": round(progress.phases["fit"], 4),
            }
            extra = {
                "holdout_scheme": HOLDOUT_SCHEME,
                "holdout_fraction": fraction,
                "trigger": ticket.reason,
                "training": ticket.number,
                "coalesced": ticket.coalesced,
                "iterations": progress.iterations,
                "training_started_at": started,
                "last_row_stored_at": self._last_row_at,
                "phases": {k: round(v, 4) for k, v in progress.phases.items()},
            }
            with progress.phase("publish"):
                version = publish_verdict(
                    self.models,
                    self.model,
                    candidate,
                    verdict,
                    metrics,
                    backend=self.backend,
                    data=data.range,
                    extra=extra,
                    keep_rejected=self.keep_rejected,
                )
        except Exception:
            progress.finish("failed")
            raise
        with progress.phase("emit"):
            event = verdict_event(self.model, verdict, version, metrics, source=self.source)
            try:
                self.emit(event)
            except Exception as err:  # the version is stored; handles still poll the store
                log.error(
                    "could not announce %s: %s", event["type"], err, extra={"model": self.model}
                )
        progress.finish(verdict.decision)
        if verdict.publish and version is not None:
            self.metrics.version.labels(self.model).set(version.version)
        log.info(
            "%s %s v%s: %s",
            verdict.decision,
            self.model,
            None if version is None else version.version,
            verdict.reason,
            extra={"model": self.model, "decision": verdict.decision, **metrics},
        )
        return Outcome(
            ticket,
            verdict.decision,
            verdict.reason,
            version=None if version is None else version.version,
            metrics=metrics,
            verdict=verdict,
            phases=dict(progress.phases),
            started=started,
            finished=time.time(),
        )


# --- one loop per retrain function and process ---------------------------------------

_LOOPS: dict[tuple[str, ...], RetrainLoop] = {}
_OWNED: dict[tuple[str, ...], Emitter] = {}
_LOOPS_LOCK = threading.Lock()


def loop_for(
    ctx: Context,
    *,
    dataset: str,
    fit: FitFn,
    backend: str = "sklearn",
    emit: Emitter | None = None,
) -> RetrainLoop:
    """The running loop of the calling retrain function, created on first use.

    The policy is the function's ``retrain=`` spec; the stores come from ``ctx`` (or the
    settings); announcements go to the function's ``reply_to_broker``.

    Raises:
        SpecError: the function declares no ``retrain=`` policy.
    """
    spec = ctx.spec
    if spec.retrain is None:
        raise SpecError(
            f"function {spec.name!r} calls loop_for() but declares no retrain policy; "
            'add retrain={"model": ..., "every_rows": N} to its @event decorator'
        )
    from runtime.models.handle import model_store

    models = ctx.models if isinstance(ctx.models, ModelStore) else model_store(ctx.settings)
    datasets = (
        ctx.datasets
        if isinstance(ctx.datasets, DatasetStore)
        else DatasetStore(ctx.settings.dataset_store_path)
    )
    key = (spec.name, dataset, repr(models), str(datasets.root))
    with _LOOPS_LOCK:
        loop = _LOOPS.get(key)
        if loop is None:
            if emit is None:
                emitters = ctx.emitters or default_emitters(ctx.settings)
                emit = emitters(spec.reply_to_broker)
                _OWNED[key] = emit
            loop = RetrainLoop(
                spec.retrain,
                models=models,
                dataset=datasets.open(dataset),
                fit=fit,
                emit=emit,
                backend=backend,
                source=f"/mlfn/functions/{spec.name}",
                keep_rejected=ctx.settings.loop.keep_rejected,
            ).start()
            _LOOPS[key] = loop
        return loop


def close_loops(timeout: float = 10.0) -> None:
    """Stop every loop :func:`loop_for` started (tests, server shutdown)."""
    with _LOOPS_LOCK:
        loops = list(_LOOPS.values())
        owned = list(_OWNED.values())
        _LOOPS.clear()
        _OWNED.clear()
    for loop in loops:
        loop.stop(timeout)
    for emitter in owned:
        close = getattr(emitter, "close", None)
        if callable(close):
            close()
