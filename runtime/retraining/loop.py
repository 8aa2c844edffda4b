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

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.context import Context
from runtime.datasets import DatasetLike, DatasetsLike, Row
from runtime.errors import ModelNotFoundError, SpecError
from runtime.groupcommit import GroupCommit
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
from runtime.retraining.together import current as current_batch
from runtime.spec import RetrainPolicy
from runtime.stores.retrain_state import RetrainState

__all__ = [
    "PING",
    "RETRAIN_REQUESTED",
    "FitFn",
    "Outcome",
    "RetrainLoop",
    "close_loops",
    "loop_for",
]

RETRAIN_REQUESTED = "mlfn.retrain.requested"
"""CloudEvent type asking for a training now (``subject``: the model; data may say why)."""

PING = "dev.knative.sources.ping"
"""CloudEvent type of Knative's PingSource (and of ``mlfn dev``'s ping source): the time
trigger waking a retrain function that scaled to zero; see :meth:`RetrainLoop.tick`."""

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
        state: where the retraining state outlives the process (last training, failures)
            and the single-flight lock across replicas; None: in this process only.
    """

    def __init__(
        self,
        policy: RetrainPolicy,
        *,
        models: ModelStore,
        dataset: DatasetLike,
        fit: FitFn,
        emit: Emitter,
        backend: str = "sklearn",
        source: str = "/mlfn/retrain",
        keep_rejected: bool = True,
        min_train_rows: int = 20,
        metrics: TrainingMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        state: RetrainState | None = None,
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
        self.state = state
        self._clock = clock
        self._covered: tuple[float, int] | None = None
        # rows added concurrently share one count of the store's pending rows
        self._syncs: GroupCommit[int, None] = GroupCommit(
            self._sync_pending, name=f"pending-row counts of {policy.model!r}"
        )
        restored = self._restored()
        self.driver = RetrainDriver(
            policy, self._train, clock=clock, pending_rows=self._untrained_rows(), **restored
        )

    @property
    def model(self) -> str:
        return self.policy.model

    def start(self) -> RetrainLoop:
        self.driver.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        return self.driver.stop(timeout)

    def _monotonic(self, when: datetime) -> float:
        """A stored wall-clock time on the scheduler's monotonic clock."""
        return self._clock() - max(0.0, time.time() - when.timestamp())

    def _restored(self) -> dict[str, Any]:
        """Scheduler state from the stored record: time-trigger epoch, failures, retry time."""
        if self.state is None:
            return {}
        record = self.state.get(self.model)
        out: dict[str, Any] = {"epoch": self._monotonic(record.epoch)}
        if record.failures and record.last_finished is not None:
            delay = min(60.0, 2.0 ** (record.failures - 1))
            out["failures"] = record.failures
            out["retry_at"] = self._monotonic(record.last_finished) + delay
        return out

    def tick(self, reason: str = "ping", timeout: float = 300.0) -> bool:
        """The time trigger's wake-up call (a PingSource event): adopt the stored state,
        let the scheduler decide, and wait until no training runs or is due.

        Waiting keeps the request (so the pod) alive while a training runs: Knative does
        not scale a pod with a request in flight to zero.

        Returns:
            True when the loop is idle again within ``timeout``.
        """
        pending = self._untrained_rows()
        epoch = self._restored().get("epoch", 0.0) if self.state is not None else 0.0
        log.info("ping (%s): %d untrained rows", reason, pending, extra={"model": self.model})
        self.driver.sync(pending_rows=pending, epoch=epoch)
        return self.driver.wait_idle(timeout)

    def _covered_rows(self, *, fresh: bool = True) -> int:
        """The last row any stored version (published or rejected) was trained on.

        ``fresh=False`` may answer from a value read at most a second ago (per stored row).
        """
        now = time.monotonic()
        if not fresh and self._covered is not None and now - self._covered[0] < 1.0:
            return self._covered[1]
        value = self._read_covered_rows()
        self._covered = (now, value)
        return value

    def _read_covered_rows(self) -> int:
        try:
            versions = self.models.versions(self.model)
        except ModelNotFoundError:
            return 0
        for meta in reversed(versions):
            if meta.data is not None and meta.data.dataset == self.dataset.name:
                return meta.data.last_seq
        return 0

    def _uncovered_rows(self) -> int:
        """Rows after the last one any stored version (published or rejected) trained on."""
        return self.dataset.count_since(self._covered_rows(fresh=False))

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

    def add(self, rows: Sequence[Row], *, now: bool = False) -> int:
        """Store rows (a row whose id is stored already is skipped); returns how many were new.

        With a retraining state (``loop_for``) the row trigger counts every replica's rows:
        the pending count becomes the store's rows after the last trained-on row, so that
        replicas which each received part of the rows still train once ``every_rows``
        arrived between them. Calls in flight together share the dataset's commit and
        one count of the store (group commits, ``docs/ingest.md``); each returns once its
        rows are committed and counted.

        While the server handles a batch of events (:func:`~runtime.retraining.together.rows_together`),
        rows are only collected, and stored together when the batch ends (returns 0);
        ``now=True`` stores them at once regardless.
        """
        together = None if now else current_batch()
        if together is not None:
            together.defer(self, rows)
            return 0
        added = self.dataset.append(rows)
        if added < len(rows):
            self.metrics.duplicates.labels(self.dataset.name).inc(len(rows) - added)
        if added:
            self._last_row_at = time.time()
        if added and self.state is not None:  # replicas (local instances too) share the store
            self._syncs.submit(added)
        else:
            self.driver.add_rows(added)
        self.metrics.pending.labels(self.model).set(self.driver.pending_rows)
        return added

    def _sync_pending(self, added: list[int]) -> list[None]:
        """Adopt the store's count of untrained rows, once for every add in flight: each
        of them returns after a count that began once its rows were committed."""
        self.driver.stored(sum(added), pending_rows=self._uncovered_rows())
        return [None] * len(added)

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

    def _flight(self) -> contextlib.AbstractContextManager[bool]:
        if self.state is None:
            return contextlib.nullcontext(True)
        return self.state.single_flight(self.model, wait=True)

    def _train(self, ticket: Ticket) -> Outcome:
        started = time.time()
        try:
            with self._flight():  # no other replica trains this model meanwhile
                forced = ticket.reason.startswith("requested")
                if not forced and self.dataset.watermark() <= self._covered_rows():
                    outcome = Outcome(
                        ticket,
                        "skipped",
                        "another replica already trained on every stored row",
                        started=started,
                        finished=time.time(),
                    )
                    log.info("training skipped: %s", outcome.reason, extra={"model": self.model})
                else:
                    started = time.time()  # once the lock is held: when training began
                    if self.state is not None:
                        self.state.started(self.model)
                    outcome = self._train_gated(ticket, started)
                    if self.state is not None:
                        self.state.finished(self.model, outcome.decision, ok=True)
        except Exception as err:
            outcome = Outcome(
                ticket,
                "failed",
                f"{type(err).__name__}: {err}",
                started=started,
                finished=time.time(),
            )
            self._record(outcome)
            if self.state is not None:
                with contextlib.suppress(Exception):  # the database may be what failed
                    self.state.finished(self.model, "failed", ok=False, error=outcome.reason)
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
        if "accuracy" in metrics:
            self.metrics.holdout_accuracy.labels(self.model, verdict.decision).set(
                metrics["accuracy"]
            )
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
_BY_CONTEXT: dict[tuple[Any, ...], tuple[tuple[Any, ...], RetrainLoop]] = {}
"""The loop :func:`loop_for` gave, by the identities of what chose it (the context, its
settings and stores, ``fit``); the entry holds those objects, so no id is reused meanwhile."""


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
    chosen_by = (ctx, ctx.settings, ctx.models, ctx.datasets, fit)
    fast = (*map(id, chosen_by), dataset, backend)
    known = _BY_CONTEXT.get(fast) if emit is None else None
    if known is not None and all(a is b for a, b in zip(known[0], chosen_by, strict=True)):
        return known[1]  # called once per stored row: skip the lookups
    spec = ctx.spec
    if spec.retrain is None:
        raise SpecError(
            f"function {spec.name!r} calls loop_for() but declares no retrain policy; "
            'add retrain={"model": ..., "every_rows": N} to its @event decorator'
        )
    from runtime.stores import open_stores

    stores = open_stores(ctx.settings)
    models = ctx.models if isinstance(ctx.models, ModelStore) else stores.models
    datasets: DatasetsLike = ctx.datasets if ctx.datasets is not None else stores.datasets
    key = (spec.name, dataset, repr(models), repr(datasets))
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
                state=stores.retrain,
            ).start()
            _LOOPS[key] = loop
        if emit is None or _OWNED.get(key) is emit:
            _BY_CONTEXT[fast] = (chosen_by, loop)
        return loop


def close_loops(timeout: float = 10.0) -> None:
    """Stop every loop :func:`loop_for` started (tests, server shutdown)."""
    with _LOOPS_LOCK:
        loops = list(_LOOPS.values())
        owned = list(_OWNED.values())
        _LOOPS.clear()
        _OWNED.clear()
        _BY_CONTEXT.clear()
    for loop in loops:
        loop.stop(timeout)
    for emitter in owned:
        close = getattr(emitter, "close", None)
        if callable(close):
            close()
