"""The loop's public surface, pinned: what retrain functions and the platform import."""

from __future__ import annotations

import pytest

import localplatform.canary
import localplatform.canary_io
import runtime.retraining

pytestmark = pytest.mark.unit


def test_runtime_retraining_exports() -> None:
    assert sorted(runtime.retraining.__all__) == sorted(
        [
            "METRICS", "MODEL_PUBLISHED", "MODEL_REJECTED", "REGISTRY", "RETRAIN_REQUESTED",
            "Decision", "EmitError",
            "Emitter", "FitFn", "HttpEmitter", "KafkaEmitter", "Outcome", "Progress",
            "RetrainDriver", "RetrainLoop", "RetrainScheduler", "Ticket", "TrainingMetrics",
            "Verdict", "close_loops", "emitter_for", "in_holdout", "judge", "loop_for",
        ]
    )  # fmt: skip
    for name in runtime.retraining.__all__:
        assert getattr(runtime.retraining, name) is not None


def test_canary_exports() -> None:
    assert sorted(localplatform.canary.__all__) == [
        "CanaryAction", "CanaryController", "CanaryDecision", "CanaryDriver", "Finder", "Reader",
        "RevisionStats", "RolloutTarget", "Split", "histogram_quantile",
    ]  # fmt: skip
    # the Knative target moved to knative.rollout; Flagger does the cluster's analysis
    assert sorted(localplatform.canary_io.__all__) == [
        "LocalTarget", "local_reader", "local_splits", "parse_metrics", "scrape", "start_local",
    ]  # fmt: skip
    for module in (localplatform.canary, localplatform.canary_io):
        for name in module.__all__:
            assert hasattr(module, name)
