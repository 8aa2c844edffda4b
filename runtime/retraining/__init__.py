"""The closed ML loop: when to retrain, whether a candidate may serve, and how it is announced.

- :mod:`~runtime.retraining.policy`: the retrain scheduler (rows/time triggers, debounce,
  single flight, coalesced follow-ups), pure over an injected clock;
  :mod:`~runtime.retraining.driver` runs it in a thread.
- :mod:`~runtime.retraining.gate`: the holdout evaluation gate and its verdict events
  (``mlfn.model.published`` / ``mlfn.model.rejected``).
- :mod:`~runtime.retraining.progress`: training progress in logs and Prometheus metrics.
- :mod:`~runtime.retraining.emit`: announcements to the broker (HTTP ingress here; the Kafka
  emitters are in :mod:`eventing.sinks`, passed in by whoever starts the server).
- :mod:`~runtime.retraining.loop`: :class:`RetrainLoop` and :func:`loop_for`, what a retrain
  function calls.
"""

from runtime.retraining.driver import RetrainDriver
from runtime.retraining.emit import (
    EmitError,
    Emitter,
    EmitterFactory,
    HttpEmitter,
    default_emitters,
)
from runtime.retraining.gate import (
    MODEL_PUBLISHED,
    MODEL_REJECTED,
    Verdict,
    in_holdout,
    judge,
)
from runtime.retraining.loop import (
    RETRAIN_REQUESTED,
    FitFn,
    Outcome,
    RetrainLoop,
    close_loops,
    loop_for,
)
from runtime.retraining.policy import Decision, RetrainScheduler, Ticket
from runtime.retraining.progress import METRICS, REGISTRY, Progress, TrainingMetrics

__all__ = [
    "METRICS",
    "MODEL_PUBLISHED",
    "MODEL_REJECTED",
    "REGISTRY",
    "RETRAIN_REQUESTED",
    "Decision",
    "EmitError",
    "Emitter",
    "EmitterFactory",
    "FitFn",
    "HttpEmitter",
    "Outcome",
    "Progress",
    "RetrainDriver",
    "RetrainLoop",
    "RetrainScheduler",
    "Ticket",
    "TrainingMetrics",
    "Verdict",
    "close_loops",
    "default_emitters",
    "in_holdout",
    "judge",
    "loop_for",
]
