"""Training progress: rows, iterations, elapsed time and phases, in logs and Prometheus metrics.

A :class:`Progress` follows one training. The loop opens it, times the phases
(``read``, ``fit``, ``evaluate``, ``publish``) with :meth:`Progress.phase`, and a user's fit
function may report iterations with :meth:`Progress.iteration` (logged at most once per
``log_every`` seconds, so a tight loop does not flood the log).

Metrics live in :data:`REGISTRY` (a registry of the loop's own, so tests and several
loops in one process never collide with the server's); the retrain server exposes it
beside its own on ``/metrics``.

Example:
    >>> p = Progress("digits", rows=1200, metrics=TrainingMetrics(CollectorRegistry()))
    >>> with p.phase("fit"):
    ...     p.iteration(10)
    >>> p.finish("published")["iterations"]
    10
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["METRICS", "REGISTRY", "Progress", "TrainingMetrics", "expose"]

log = logging.getLogger(__name__)

_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class TrainingMetrics:
    """The loop's Prometheus metrics, registered once in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.registry = registry
        self.rows = Gauge(
            "mlfn_training_rows", "Rows in the running (or last) training", ["model"], registry=r
        )
        self.iterations = Gauge(
            "mlfn_training_iterations",
            "Iterations done by the running (or last) training",
            ["model"],
            registry=r,
        )
        self.elapsed = Gauge(
            "mlfn_training_elapsed_seconds",
            "Seconds since the running (or last) training began",
            ["model"],
            registry=r,
        )
        self.in_progress = Gauge(
            "mlfn_training_in_progress", "1 while a training runs", ["model"], registry=r
        )
        self.phase = Gauge(
            "mlfn_training_phase_seconds",
            "Duration of each phase of the last training",
            ["model", "phase"],
            registry=r,
        )
        self.duration = Histogram(
            "mlfn_training_duration_seconds",
            "Trainings by outcome (published, rejected, failed)",
            ["model", "outcome"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "mlfn_model_decisions",
            "Gate decisions and failures per model",
            ["model", "decision"],
            registry=r,
        )
        self.pending = Gauge(
            "mlfn_retrain_pending_rows",
            "Rows stored since the last training started",
            ["model"],
            registry=r,
        )
        self.duplicates = Counter(
            "mlfn_eventing_duplicates",
            "Events that reached the dataset again (redeliveries) and were dropped by its "
            "idempotency on the event id",
            ["dataset"],
            registry=r,
        )
        self.version = Gauge(
            "mlfn_model_latest_version",
            "The version the latest pointer names",
            ["model"],
            registry=r,
        )
        self.holdout_accuracy = Gauge(
            "mlfn_model_holdout_accuracy",
            "Holdout accuracy of the last candidate the gate judged, by its decision",
            ["model", "decision"],
            registry=r,
        )


REGISTRY = CollectorRegistry(auto_describe=True)
"""The registry of :data:`METRICS`; render it with ``prometheus_client.generate_latest``."""

METRICS = TrainingMetrics(REGISTRY)


class _Forward:
    """A collector that yields another registry's metrics (read at scrape time)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        yield from self.source.collect()

    def describe(self) -> list[Any]:
        return []  # names are checked in the source registry, not twice


def expose(registry: CollectorRegistry) -> None:
    """Serve the loop's metrics (:data:`REGISTRY`) from ``registry`` too (a server's ``/metrics``)."""
    registry.register(_Forward(REGISTRY))


class Progress:
    """Progress of one training of ``model`` over ``rows`` rows.

    Args:
        model: the model's name (the metrics label).
        rows: rows the training reads.
        metrics: where to record (default: :data:`METRICS`).
        clock: monotonic seconds (injectable).
        log_every: minimum seconds between two iteration log lines.
        logger: where progress lines go.
    """

    def __init__(
        self,
        model: str,
        *,
        rows: int,
        metrics: TrainingMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        log_every: float = 1.0,
        logger: logging.Logger = log,
    ) -> None:
        self.model = model
        self.rows = rows
        self.metrics = metrics or METRICS
        self._clock = clock
        self._log_every = log_every
        self._log = logger
        self._started = clock()
        self._last_log = self._started
        self.iterations = 0
        self.phases: dict[str, float] = {}
        self.figures: dict[str, float] = {}
        m = self.metrics
        m.rows.labels(model).set(rows)
        m.iterations.labels(model).set(0)
        m.elapsed.labels(model).set(0)
        m.in_progress.labels(model).set(1)

    def set_rows(self, rows: int) -> None:
        """The rows the training reads, once known."""
        self.rows = rows
        self.metrics.rows.labels(self.model).set(rows)

    @property
    def elapsed(self) -> float:
        """Seconds since the training began."""
        return self._clock() - self._started

    def iteration(self, n: int | None = None, **figures: float) -> None:
        """Report progress: ``n`` iterations done so far (default: one more), and figures
        such as ``loss``. Logged at most once per ``log_every`` seconds."""
        self.iterations = self.iterations + 1 if n is None else n
        self.figures.update(figures)
        now = self._clock()
        self.metrics.iterations.labels(self.model).set(self.iterations)
        self.metrics.elapsed.labels(self.model).set(now - self._started)
        if now - self._last_log >= self._log_every:
            self._last_log = now
            self._log.info(
                "training %s: %d iterations, %.1fs",
                self.model,
                self.iterations,
                now - self._started,
                extra=self._extra(),
            )

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the training (``read``, ``fit``, ``evaluate``, ``publish``)."""
        began = self._clock()
        try:
            yield
        finally:
            seconds = self._clock() - began
            self.phases[name] = self.phases.get(name, 0.0) + seconds
            self.metrics.phase.labels(self.model, name).set(self.phases[name])
            self.metrics.elapsed.labels(self.model).set(self._clock() - self._started)

    def finish(self, outcome: str) -> dict[str, Any]:
        """End the training with ``outcome`` (published, rejected, failed); log a summary.

        Returns:
            The summary: rows, iterations, elapsed seconds, phase seconds, figures.
        """
        elapsed = self.elapsed
        m = self.metrics
        m.in_progress.labels(self.model).set(0)
        m.elapsed.labels(self.model).set(elapsed)
        m.duration.labels(self.model, outcome).observe(elapsed)
        m.decisions.labels(self.model, outcome).inc()
        summary = self._extra() | {"outcome": outcome}
        self._log.info(
            "training %s %s after %.3fs: %d rows, %d iterations",
            self.model,
            outcome,
            elapsed,
            self.rows,
            self.iterations,
            extra=summary,
        )
        return summary

    def _extra(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "rows": self.rows,
            "iterations": self.iterations,
            "elapsed_seconds": round(self.elapsed, 4),
            "phases": {k: round(v, 4) for k, v in self.phases.items()},
            **self.figures,
        }
