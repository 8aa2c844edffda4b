"""The retrain scheduler: when to train, as a pure state machine over an injected clock.

A :class:`RetrainScheduler` applies a :class:`~runtime.spec.RetrainPolicy`:

- **rows**: train once ``every_rows`` new rows arrived since the last training started;
- **time**: train once ``every_seconds`` passed since the last training started (or since
  the scheduler was created) and at least ``min_rows`` new rows arrived;
- neither set: train on every ``min_rows`` new rows.

**Debounce.** Once a trigger is due, training starts when no row arrived for
``debounce_seconds``, and at the latest ``debounce_seconds`` after it became due, so a
burst of rows lands in one training instead of several.

**Single flight.** At most one training runs at a time. Rows that arrive during a training
are counted; when it ends, they become *one* follow-up training if they meet a trigger,
however many thresholds they crossed (triggers coalesce).

**Failures.** A failed training gives its rows back and the next attempt waits a backoff
that doubles per consecutive failure (``failure_backoff`` .. ``max_failure_backoff``).

Nothing here reads a clock or sleeps: every method takes ``now`` (seconds, monotonic).
:mod:`runtime.retraining.driver` runs it in a thread.

Example:
    >>> from runtime.spec import RetrainPolicy
    >>> s = RetrainScheduler(RetrainPolicy(model="m", every_rows=3, debounce_seconds=0), now=0.0)
    >>> s.add_rows(2, now=1.0); s.decide(now=1.0).action
    'idle'
    >>> s.add_rows(1, now=2.0); s.decide(now=2.0).action
    'train'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runtime.spec import RetrainPolicy

__all__ = ["Action", "Decision", "RetrainScheduler", "Ticket"]

Action = Literal["train", "wait", "busy", "idle"]
"""``train``: start now; ``wait``: ask again at ``wake_at``; ``busy``: a training runs;
``idle``: nothing is due (ask again when rows arrive)."""


@dataclass(frozen=True)
class Decision:
    """What the scheduler wants now, and why (the reason goes into logs and metadata)."""

    action: Action
    reason: str
    pending_rows: int
    wake_at: float | None = None

    @property
    def due(self) -> bool:
        """A trigger fired: training starts now or after a debounce or failure backoff."""
        return self.action == "train" or self.reason.startswith(("debouncing", "backing off"))


@dataclass(frozen=True)
class Ticket:
    """One training the scheduler started: the rows it covers and why it started."""

    number: int
    rows: int
    reason: str
    started_at: float
    coalesced: int = 0
    """Triggers that fired while the previous training ran and were folded into this one."""


class RetrainScheduler:
    """Decides when a model retrains. Not thread-safe: the driver holds a lock around it.

    Args:
        policy: the function's retrain policy.
        now: the clock's current value; the time trigger counts from here.
        pending_rows: rows already waiting (for instance, rows in the dataset store that
            the served model was not trained on, found at start-up).
        failure_backoff: first delay after a failed training, in seconds.
        max_failure_backoff: upper bound of that delay.
        epoch: when the time trigger started counting (default ``now``), e.g. the last
            training start restored from the retraining state of a previous process.
        failures: consecutive failed trainings restored from that state.
        retry_at: when the next attempt after those failures may start.
    """

    def __init__(
        self,
        policy: RetrainPolicy,
        *,
        now: float,
        pending_rows: int = 0,
        failure_backoff: float = 1.0,
        max_failure_backoff: float = 60.0,
        epoch: float | None = None,
        failures: int = 0,
        retry_at: float | None = None,
    ) -> None:
        if pending_rows < 0:
            raise ValueError(f"pending_rows must be >= 0, got {pending_rows}")
        self.policy = policy
        self.failure_backoff = failure_backoff
        self.max_failure_backoff = max_failure_backoff
        self._pending = pending_rows
        self._last_row_at: float | None = now if pending_rows else None
        self._epoch = now if epoch is None else epoch  # counts from the last training start
        self._due_since: float | None = None
        self._forced: str | None = None
        self._running: Ticket | None = None
        self._coalesced = 0
        self._failures = failures
        self._retry_at: float | None = retry_at
        self._started = 0

    # --- inputs -----------------------------------------------------------------

    def add_rows(self, n: int, *, now: float) -> None:
        """``n`` new rows were stored (duplicates excluded)."""
        if n < 0:
            raise ValueError(f"row count must be >= 0, got {n}")
        if n == 0:
            return
        before, was_due = self._pending, self._trigger() is not None
        self._pending += n
        self._last_row_at = now
        if self._running is not None:
            every = self._every_rows()
            if every:
                self._coalesced += self._pending // every - before // every
            elif not was_due and self._trigger() is not None:
                self._coalesced += 1

    def sync(self, *, pending_rows: int, epoch: float, now: float) -> None:
        """Adopt the stored truth (rows other replicas stored, a training another one
        started): unless a training runs here, pending rows become ``pending_rows`` and the
        time trigger counts from ``epoch`` if that is later than what it counts from."""
        if self._running is not None or pending_rows < 0:
            return
        if pending_rows > self._pending:
            self._last_row_at = now
        self._pending = pending_rows
        self._epoch = max(self._epoch, epoch)

    def stored(self, n: int, *, pending_rows: int, now: float) -> None:
        """``n`` new rows were stored, and the store counts ``pending_rows`` untrained rows
        (other replicas' included): the count adopts the store's, or, while a training
        runs here (it covers only what was pending when it began), adds the ``n``.

        One call, not :meth:`add_rows` then :meth:`sync`: between the two, a count taken
        by a concurrent caller may already hold these rows, and adding them again would
        start a training before ``every_rows`` rows are there."""
        if self._running is not None:
            self.add_rows(n, now=now)
        else:
            self.sync(pending_rows=pending_rows, epoch=float("-inf"), now=now)

    def request(self, reason: str = "requested") -> None:
        """Ask for a training regardless of thresholds (still single-flight, debounced)."""
        if self._running is not None and self._forced is None:
            self._coalesced += 1
        self._forced = reason

    def started(self, *, now: float) -> Ticket:
        """Mark a training as started; it covers every pending row.

        Raises:
            RuntimeError: a training is already running (the driver broke single flight).
        """
        if self._running is not None:
            raise RuntimeError(
                f"training #{self._running.number} is still running; call finished() first"
            )
        reason = self._forced or self._trigger(now) or "started by hand"
        self._started += 1
        ticket = Ticket(self._started, self._pending, reason, now, self._coalesced)
        self._running = ticket
        self._pending = 0
        self._forced = None
        self._due_since = None
        self._coalesced = 0
        self._epoch = now
        return ticket

    def finished(self, *, now: float, ok: bool = True) -> None:
        """The running training ended; on failure its rows come back, after a backoff."""
        ticket = self._running
        if ticket is None:
            raise RuntimeError("finished() called with no training running")
        self._running = None
        if ok:
            self._failures = 0
            self._retry_at = None
            return
        self._failures += 1
        self._pending += ticket.rows
        if self._forced is None and ticket.reason.startswith("requested"):
            self._forced = ticket.reason
        delay = min(self.max_failure_backoff, self.failure_backoff * 2 ** (self._failures - 1))
        self._retry_at = now + delay

    # --- state ------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        return self._pending

    @property
    def running(self) -> Ticket | None:
        return self._running

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _every_rows(self) -> int:
        p = self.policy
        if p.every_rows is not None:
            return p.every_rows
        return p.min_rows if p.every_seconds is None else 0

    def _trigger(self, now: float | None = None) -> str | None:
        """Why training is due ignoring debounce, or None. Without ``now``: rows only."""
        every = self._every_rows()
        if every and self._pending >= every:
            return f"{self._pending} new rows >= every_rows={every}"
        p = self.policy
        if p.every_seconds is not None and self._pending >= p.min_rows:
            due_at = self._epoch + p.every_seconds
            if now is not None and now >= due_at:
                return (
                    f"{now - self._epoch:.1f}s since the last training >= "
                    f"every_seconds={p.every_seconds:g} with {self._pending} new rows"
                )
        return None

    def _time_due_at(self) -> float | None:
        p = self.policy
        if p.every_seconds is None or self._pending < p.min_rows:
            return None
        return self._epoch + p.every_seconds

    # --- the decision -----------------------------------------------------------

    def decide(self, *, now: float) -> Decision:
        """What to do at ``now``: train, wait until ``wake_at``, busy, or idle."""
        pending = self._pending
        if self._running is not None:
            return Decision("busy", f"training #{self._running.number} is running", pending)
        reason = self._forced or self._trigger(now)
        if reason is None:
            self._due_since = None
            wake = self._time_due_at()
            if wake is not None:
                return Decision("wait", "waiting for the time trigger", pending, wake)
            return Decision("idle", self._idle_reason(), pending)
        if self._retry_at is not None and now < self._retry_at:
            return Decision(
                "wait",
                f"backing off after {self._failures} failed training(s)",
                pending,
                self._retry_at,
            )
        if self._due_since is None:
            self._due_since = now
        start_at = self._debounced_start(self._due_since)
        if now >= start_at:
            return Decision("train", reason, pending)
        return Decision("wait", f"debouncing: {reason}", pending, start_at)

    def _debounced_start(self, due_since: float) -> float:
        d = self.policy.debounce_seconds
        last = self._last_row_at if self._last_row_at is not None else due_since
        # quiet for d, or d after becoming due, whichever comes first
        return max(due_since, min(last, due_since) + d)

    def _idle_reason(self) -> str:
        every = self._every_rows()
        parts = []
        if every:
            parts.append(f"{self._pending}/{every} rows")
        if self.policy.every_seconds is not None:
            parts.append(f"{self._pending}/{self.policy.min_rows} rows for the time trigger")
        return "not due: " + ", ".join(parts) if parts else "not due"
