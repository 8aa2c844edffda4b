"""Training progress in logs and Prometheus metrics."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from runtime.retraining.progress import Progress, TrainingMetrics

pytestmark = pytest.mark.unit


def test_progress_records_rows_iterations_phases_and_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    now = [0.0]
    p = Progress(
        "digits", rows=1200, metrics=TrainingMetrics(registry), clock=lambda: now[0], log_every=2
    )
    caplog.set_level(logging.INFO, logger="runtime.retraining.progress")
    with p.phase("fit"):
        for _ in range(5):
            now[0] += 1.0
            p.iteration(loss=0.5)
    summary = p.finish("published")
    assert summary["iterations"] == 5 and summary["rows"] == 1200
    assert summary["outcome"] == "published" and summary["loss"] == 0.5
    assert p.phases["fit"] > 0
    text = generate_latest(registry).decode()
    assert 'mlfn_training_rows{model="digits"} 1200.0' in text
    assert 'mlfn_training_iterations{model="digits"} 5.0' in text
    assert 'mlfn_training_in_progress{model="digits"} 0.0' in text
    assert 'mlfn_model_decisions_total{decision="published",model="digits"} 1.0' in text
    assert 'mlfn_training_phase_seconds{model="digits",phase="fit"}' in text
    lines = [r.getMessage() for r in caplog.records]
    # five iterations one second apart, logged at most every 2 s (at 2 s and 4 s)
    assert sum("iterations," in m for m in lines) == 2
    assert any("published after" in m for m in lines)


def test_iteration_numbers_may_be_given_explicitly() -> None:
    p = Progress("m", rows=1, metrics=TrainingMetrics(CollectorRegistry()))
    p.iteration(40)
    p.iteration()
    assert p.iterations == 41
