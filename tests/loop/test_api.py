"""The loop's public surface, pinned: what retrain functions and the platform import."""

from __future__ import annotations

from types import ModuleType

import pytest

import localplatform.canary
import localplatform.canary_io
import runtime.retraining

pytestmark = pytest.mark.unit


def _missing(module: ModuleType) -> list[str]:
    return [name for name in module.__all__ if not hasattr(module, name)]


def test_runtime_retraining_exports() -> None:
    assert sorted(runtime.retraining.__all__) == sorted(
        [
            "METRICS", "MODEL_PUBLISHED", "MODEL_REJECTED", "REGISTRY", "RETRAIN_REQUESTED",
            "Decision", "EmitError", "Emitter", "EmitterFactory", "FitFn", "HttpEmitter",
            "Outcome", "Progress", "RetrainDriver", "RetrainLoop", "RetrainScheduler", "Ticket",
            "TrainingMetrics", "Verdict", "close_loops", "default_emitters", "in_holdout",
            "judge", "loop_for",
        ]
    )  # fmt: skip
    assert _missing(runtime.retraining) == []


def test_canary_exports() -> None:
    assert sorted(localplatform.canary.__all__) == [
        "CanaryAction", "CanaryController", "CanaryDecision", "CanaryDriver", "Finder", "Reader",
        "RevisionStats", "RolloutTarget", "Split",
    ]  # fmt: skip
    assert sorted(localplatform.canary_io.__all__) == [
        "LocalTarget", "local_reader", "local_splits", "parse_metrics", "scrape", "start_local",
    ]  # fmt: skip
    assert _missing(localplatform.canary) == []
    assert _missing(localplatform.canary_io) == []
