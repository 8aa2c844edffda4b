"""The thin threaded driver of :class:`~runtime.retraining.policy.RetrainScheduler`.

One worker thread per model asks the scheduler what to do, sleeps on a condition variable
until the next deadline or until rows arrive, and runs trainings one at a time (single
flight). All decisions stay in the scheduler; this module only waits and calls.

Example:
    >>> driver = RetrainDriver(policy, train=lambda ticket: ...)   # doctest: +SKIP
    >>> driver.start(); driver.add_rows(128)                        # doctest: +SKIP
    >>> driver.stop()                                               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from runtime.retraining.policy import Decision, RetrainScheduler, Ticket
from runtime.spec import RetrainPolicy

__all__ = ["RetrainDriver"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class RetrainDriver:
    """Runs ``train(ticket)`` whenever the policy says so, never two at once.

    Args:
        policy: the retrain policy.
        train: called on the worker thread with the :class:`Ticket` of each training; an
            exception marks the training failed (its rows are retried after a backoff).
        clock: a monotonic clock in seconds (injectable for tests).
        pending_rows: rows already waiting when the driver starts.
        failure_backoff: first delay after a failed training (doubles per failure, <= 60 s).
        name: used in the thread name and logs (default: the model name).
        epoch, failures, retry_at: restored state (see
            :class:`~runtime.retraining.policy.RetrainScheduler`).
    """

    def __init__(
        self,
        policy: RetrainPolicy,
        train: Callable[[Ticket], object],
        *,
        clock: Clock = time.monotonic,
        pending_rows: int = 0,
        failure_backoff: float = 1.0,
        name: str | None = None,
        epoch: float | None = None,
        failures: int = 0,
        retry_at: float | None = None,
    ) -> None:
        self.name = name or policy.model
        self._train = train
        self._clock = clock
        self._cond = threading.Condition()
        self._scheduler = RetrainScheduler(
            policy,
            now=clock(),
            pending_rows=pending_rows,
            failure_backoff=failure_backoff,
            epoch=epoch,
            failures=failures,
            retry_at=retry_at,
        )
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._completed = 0
        self._failed = 0
        self._last: Decision | None = None

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> RetrainDriver:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is not None:
                return self
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name=f"mlfn-retrain-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the running training, if any; True if the thread ended in time."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.warning(
                "retrain driver did not stop within %.1fs: a training is still running; "
                "it is a daemon thread and ends with the process",
                timeout,
                extra={"model": self.name},
            )
            return False
        return True

    # --- inputs -----------------------------------------------------------------

    def add_rows(self, n: int) -> None:
        """``n`` new rows were stored; wake the worker if that makes a training due."""
        if n <= 0:
            return
        with self._cond:
            self._scheduler.add_rows(n, now=self._clock())
            self._cond.notify_all()

    def sync(self, *, pending_rows: int, epoch: float) -> None:
        """Adopt stored state (see ``RetrainScheduler.sync``) and wake the worker."""
        with self._cond:
            self._scheduler.sync(pending_rows=pending_rows, epoch=epoch, now=self._clock())
            self._cond.notify_all()

    def stored(self, n: int, *, pending_rows: int) -> None:
        """Rows were stored and the store counts ``pending_rows`` (see
        ``RetrainScheduler.stored``); wake the worker."""
        with self._cond:
            self._scheduler.stored(n, pending_rows=pending_rows, now=self._clock())
            self._cond.notify_all()

    def request(self, reason: str = "requested") -> None:
        """Ask for a training now, whatever the thresholds say."""
        with self._cond:
            self._scheduler.request(reason)
            self._cond.notify_all()

    # --- observation ------------------------------------------------------------

    @property
    def completed(self) -> int:
        """Trainings that ended (successfully or not)."""
        with self._cond:
            return self._completed

    @property
    def failed(self) -> int:
        with self._cond:
            return self._failed

    @property
    def pending_rows(self) -> int:
        with self._cond:
            return self._scheduler.pending_rows

    @property
    def last_decision(self) -> Decision | None:
        with self._cond:
            return self._last

    def wait_completed(self, n: int, timeout: float) -> bool:
        """Wait until at least ``n`` trainings ended; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._completed >= n, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no training runs and none is due; False on timeout."""

        def idle() -> bool:
            d = self._scheduler.decide(now=self._clock())
            return d.action != "busy" and not d.due

        with self._cond:
            return self._cond.wait_for(idle, timeout)

    # --- the worker -------------------------------------------------------------

    def _run(self) -> None:
        log.info("retrain driver started", extra={"model": self.name})
        with self._cond:
            while not self._stopping:
                now = self._clock()
                decision = self._scheduler.decide(now=now)
                self._last = decision
                if decision.action == "train":
                    self._run_one(self._scheduler.started(now=now))
                    continue
                timeout = None if decision.wake_at is None else max(0.0, decision.wake_at - now)
                self._cond.wait(timeout)
        log.info("retrain driver stopped: stop() was called", extra={"model": self.name})

    def _run_one(self, ticket: Ticket) -> None:
        """Run one training with the lock released; called with the lock held."""
        ok = False
        self._cond.release()
        try:
            log.info(
                "training #%d starts: %s",
                ticket.number,
                ticket.reason,
                extra={"model": self.name, "rows": ticket.rows, "coalesced": ticket.coalesced},
            )
            self._train(ticket)
            ok = True
        except Exception:
            log.exception(
                "training #%d failed; its rows are retried after a backoff",
                ticket.number,
                extra={"model": self.name},
            )
        finally:
            self._cond.acquire()
            self._scheduler.finished(now=self._clock(), ok=ok)
            self._completed += 1
            self._failed += 0 if ok else 1
            self._cond.notify_all()
