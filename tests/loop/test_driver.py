"""The threaded driver: single flight and coalescing on a real thread, synchronised by events."""

from __future__ import annotations

import threading

import pytest

from runtime.retraining.driver import RetrainDriver
from runtime.retraining.policy import Ticket
from runtime.spec import RetrainPolicy

pytestmark = pytest.mark.unit

DEADLINE = 10.0


class Trainer:
    """A training that blocks until the test releases it, and records what ran."""

    def __init__(self, fail_first: bool = False) -> None:
        self.tickets: list[Ticket] = []
        self.running = 0
        self.max_running = 0
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.fail_first = fail_first
        self._lock = threading.Lock()

    def __call__(self, ticket: Ticket) -> None:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.tickets.append(ticket)
        self.entered.release()
        try:
            assert self.release.acquire(timeout=DEADLINE), "the test never released the training"
            if self.fail_first and len(self.tickets) == 1:
                raise RuntimeError("boom")
        finally:
            with self._lock:
                self.running -= 1


def test_rows_during_a_training_become_exactly_one_follow_up() -> None:
    trainer = Trainer()
    policy = RetrainPolicy(model="m", every_rows=10, debounce_seconds=0)
    driver = RetrainDriver(policy, trainer).start()
    try:
        driver.add_rows(10)
        assert trainer.entered.acquire(timeout=DEADLINE)
        for _ in range(4):
            driver.add_rows(10)  # four more triggers while the first training runs
        trainer.release.release()
        assert trainer.entered.acquire(timeout=DEADLINE)  # the follow-up
        trainer.release.release()
        assert driver.wait_completed(2, DEADLINE)
        assert driver.wait_idle(DEADLINE)
        assert [t.rows for t in trainer.tickets] == [10, 40]
        assert trainer.tickets[1].coalesced == 4
        assert trainer.max_running == 1
        assert driver.completed == 2
    finally:
        trainer.release.release()
        assert driver.stop(DEADLINE)


def test_a_failing_training_is_retried_after_the_backoff() -> None:
    trainer = Trainer(fail_first=True)
    policy = RetrainPolicy(model="m", every_rows=5, debounce_seconds=0)
    driver = RetrainDriver(policy, trainer, failure_backoff=0.05).start()
    try:
        driver.add_rows(5)
        trainer.release.release()
        trainer.release.release()
        assert driver.wait_completed(2, DEADLINE)
        assert driver.failed == 1
        assert [t.rows for t in trainer.tickets] == [5, 5]
    finally:
        assert driver.stop(DEADLINE)


def test_request_starts_a_training_without_new_rows_and_stop_is_bounded() -> None:
    trainer = Trainer()
    driver = RetrainDriver(RetrainPolicy(model="m", every_rows=1000), trainer).start()
    driver.request("by hand")
    assert trainer.entered.acquire(timeout=DEADLINE)
    assert trainer.tickets[0].reason == "by hand"
    trainer.release.release()
    assert driver.wait_completed(1, DEADLINE)
    assert driver.stop(DEADLINE)
    assert driver.stop(DEADLINE)  # idempotent
