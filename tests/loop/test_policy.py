"""The retrain scheduler, driven by an explicit clock: triggers, debounce, single flight."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.retraining.policy import RetrainScheduler
from runtime.spec import RetrainPolicy

pytestmark = pytest.mark.unit


def sched(now: float = 0.0, pending: int = 0, **policy: Any) -> RetrainScheduler:
    policy.setdefault("debounce_seconds", 0.0)
    return RetrainScheduler(RetrainPolicy(model="m", **policy), now=now, pending_rows=pending)


def test_rows_trigger_fires_at_the_threshold_not_before() -> None:
    s = sched(every_rows=100)
    s.add_rows(99, now=1.0)
    assert s.decide(now=1.0).action == "idle"
    s.add_rows(1, now=2.0)
    d = s.decide(now=2.0)
    assert (d.action, d.pending_rows) == ("train", 100)
    assert "every_rows=100" in d.reason


def test_started_covers_every_pending_row_and_resets_the_count() -> None:
    s = sched(every_rows=10)
    s.add_rows(25, now=1.0)
    t = s.started(now=1.0)
    assert (t.number, t.rows) == (1, 25)
    assert s.pending_rows == 0
    assert s.decide(now=1.0).action == "busy"


def test_time_trigger_needs_min_rows_and_waits_for_its_deadline() -> None:
    s = sched(every_seconds=30, min_rows=5)
    s.add_rows(4, now=1.0)
    assert s.decide(now=100.0).action == "idle"  # too few rows, whatever the time
    s.add_rows(1, now=2.0)
    d = s.decide(now=10.0)
    assert (d.action, d.wake_at) == ("wait", 30.0)
    assert s.decide(now=30.0).action == "train"


def test_time_trigger_counts_from_the_last_training_start() -> None:
    s = sched(every_seconds=10, min_rows=1)
    s.add_rows(1, now=11.0)
    s.started(now=11.0)
    s.finished(now=12.0)
    s.add_rows(3, now=13.0)
    assert s.decide(now=20.0).wake_at == 21.0
    assert s.decide(now=21.0).action == "train"


def test_no_trigger_configured_trains_on_every_min_rows() -> None:
    s = sched(min_rows=3)
    s.add_rows(2, now=0.0)
    assert s.decide(now=0.0).action == "idle"
    s.add_rows(1, now=0.0)
    assert s.decide(now=0.0).action == "train"


def test_debounce_waits_for_quiet_but_never_longer_than_the_debounce_after_due() -> None:
    s = sched(every_rows=10, debounce_seconds=2.0)
    s.add_rows(10, now=5.0)
    d = s.decide(now=5.0)
    assert (d.action, d.wake_at) == ("wait", 7.0)
    assert d.due
    s.add_rows(5, now=6.5)  # the burst goes on: still starts at 7.0, with all 15 rows
    assert s.decide(now=6.9).action == "wait"
    d = s.decide(now=7.0)
    assert (d.action, d.pending_rows) == ("train", 15)


def test_time_trigger_with_old_rows_starts_at_once_when_quiet_long_enough() -> None:
    s = sched(every_seconds=10, min_rows=1, debounce_seconds=1.0)
    s.add_rows(1, now=2.0)  # quiet since 2.0; due at 10.0
    assert s.decide(now=10.0).action == "train"


def test_triggers_during_a_training_coalesce_into_one_follow_up() -> None:
    s = sched(every_rows=10)
    s.add_rows(10, now=0.0)
    first = s.started(now=0.0)
    for i in range(5):  # five thresholds crossed while training
        s.add_rows(10, now=1.0 + i)
        assert s.decide(now=1.0 + i).action == "busy"
    s.finished(now=10.0)
    d = s.decide(now=10.0)
    assert (d.action, d.pending_rows) == ("train", 50)
    follow = s.started(now=10.0)
    assert (first.number, follow.number, follow.rows, follow.coalesced) == (1, 2, 50, 5)
    s.finished(now=11.0)
    assert s.decide(now=11.0).action == "idle"  # exactly one follow-up


def test_rows_below_the_threshold_during_a_training_wait_for_more() -> None:
    s = sched(every_rows=10)
    s.add_rows(10, now=0.0)
    s.started(now=0.0)
    s.add_rows(3, now=1.0)
    s.finished(now=2.0)
    d = s.decide(now=2.0)
    assert (d.action, d.pending_rows) == ("idle", 3)


def test_request_trains_regardless_of_thresholds_and_coalesces_when_busy() -> None:
    s = sched(every_rows=1000)
    s.request("by hand")
    assert s.decide(now=0.0).action == "train"
    s.started(now=0.0)
    s.request("again")
    s.request("and again")
    s.finished(now=1.0)
    d = s.decide(now=1.0)
    assert (d.action, d.reason) == ("train", "and again")
    assert s.started(now=1.0).coalesced == 1


def test_a_failed_training_gives_its_rows_back_and_backs_off_exponentially() -> None:
    s = RetrainScheduler(
        RetrainPolicy(model="m", every_rows=5, debounce_seconds=0), now=0.0, failure_backoff=1.0
    )
    s.add_rows(5, now=0.0)
    s.started(now=0.0)
    s.finished(now=1.0, ok=False)
    assert s.pending_rows == 5
    d = s.decide(now=1.5)
    assert (d.action, d.wake_at) == ("wait", 2.0)
    assert "backing off" in d.reason and d.due
    s.started(now=2.0)
    s.finished(now=2.0, ok=False)
    assert s.decide(now=3.9).wake_at == 4.0  # 2 s after the second failure
    s.started(now=4.0)
    s.finished(now=4.0, ok=True)
    assert s.consecutive_failures == 0
    assert s.pending_rows == 0


def test_pending_rows_at_start_count_towards_the_threshold() -> None:
    s = sched(pending=90, every_rows=100)
    s.add_rows(10, now=1.0)
    assert s.decide(now=1.0).action == "train"


def test_misuse_raises_with_what_to_do() -> None:
    s = sched(every_rows=1)
    with pytest.raises(RuntimeError, match="no training running"):
        s.finished(now=0.0)
    s.started(now=0.0)
    with pytest.raises(RuntimeError, match="call finished"):
        s.started(now=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        s.add_rows(-1, now=0.0)


def test_the_ticket_says_which_trigger_started_it() -> None:
    s = sched(every_rows=100, every_seconds=10, min_rows=5)
    s.add_rows(7, now=1.0)
    assert s.decide(now=10.0).action == "train"
    ticket = s.started(now=10.0)
    assert "every_seconds=10" in ticket.reason and "7 new rows" in ticket.reason
