"""Canary analysis: promote or roll back a new revision from its error rate and latency.

Knative and KServe leave canary promotion to a human (kserve#3085). Here a
:class:`CanaryController` watches the candidate revision against the stable one under a
function's :class:`~runtime.spec.Rollout` policy and decides:

- **rollback** as soon as the candidate's errors make its error rate exceed
  ``max_error_rate`` (with at least ``min_requests`` requests, or with so many errors that
  ``min_requests`` could no longer bring the rate back under the bound), or, with at
  least ``min_requests`` requests on both sides, its mean latency exceeds
  ``max_latency_ratio`` times the stable revision's;
- **promote** once ``window_seconds`` passed since the canary began and the candidate
  served at least ``min_requests`` requests within the bounds;
- **wait** otherwise (the reason says what is missing).

The controller is pure: it takes counters and an explicit ``now``. :class:`CanaryDriver`
is the thin loop around it: it reads per-revision counters through a ``read`` callable,
turns cumulative counters into counts since the canary began, and applies decisions
through a :class:`RolloutTarget`. :mod:`localplatform.canary_io` holds the readers and
targets: the local platform's status and rollout API, instance ``/metrics``, and
:func:`knative.rollout.rollout` on a cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from runtime.errors import MlfnError
from runtime.spec import Rollout

__all__ = [
    "CanaryAction",
    "CanaryController",
    "CanaryDecision",
    "CanaryDriver",
    "Finder",
    "Reader",
    "RevisionStats",
    "RolloutTarget",
    "Split",
]

log = logging.getLogger(__name__)

CanaryAction = Literal["promote", "rollback", "wait"]


@dataclass(frozen=True)
class RevisionStats:
    """Cumulative counters of one revision: requests, errors (5xx), latency sum in seconds."""

    revision: str
    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def mean_latency(self) -> float | None:
        return self.latency_sum / self.requests if self.requests else None

    def since(self, base: RevisionStats) -> RevisionStats:
        """Counts since ``base`` (a counter that went down means a restart: keep it whole)."""
        if self.requests < base.requests or self.errors < base.errors:
            return self
        return RevisionStats(
            self.revision,
            self.requests - base.requests,
            self.errors - base.errors,
            max(0.0, self.latency_sum - base.latency_sum),
        )


@dataclass(frozen=True)
class CanaryDecision:
    """What to do with the candidate, why, and the figures behind it."""

    action: CanaryAction
    reason: str
    candidate: RevisionStats
    stable: RevisionStats
    elapsed: float


class CanaryController:
    """Decides one canary of a function.

    Args:
        rollout: the function's rollout policy (``strategy="canary"``).
        candidate: the new revision's name.
        stable: the revision it is compared with.
        started_at: when the candidate got its share of traffic (the clock of ``now``).
    """

    def __init__(self, rollout: Rollout, *, candidate: str, stable: str, started_at: float) -> None:
        self.rollout = rollout
        self.candidate = candidate
        self.stable = stable
        self.started_at = started_at

    def decide(
        self, candidate: RevisionStats, stable: RevisionStats, *, now: float
    ) -> CanaryDecision:
        """Judge the counters gathered since the canary began."""
        r = self.rollout
        elapsed = now - self.started_at

        def decision(action: CanaryAction, reason: str) -> CanaryDecision:
            return CanaryDecision(action, reason, candidate, stable, elapsed)

        n, errors = candidate.requests, candidate.errors
        # rollback early when even a perfect rest of min_requests could not save the rate
        hopeless = errors > r.max_error_rate * max(n, r.min_requests)
        if errors and (n >= r.min_requests or hopeless) and candidate.error_rate > r.max_error_rate:
            return decision(
                "rollback",
                f"error rate {candidate.error_rate:.2%} ({errors}/{n}) > "
                f"max_error_rate {r.max_error_rate:.2%}",
            )
        cand_lat, stable_lat = candidate.mean_latency, stable.mean_latency
        enough = n >= r.min_requests and stable.requests >= r.min_requests
        if enough and cand_lat is not None and stable_lat:
            ratio = cand_lat / stable_lat
            if ratio > r.max_latency_ratio:
                return decision(
                    "rollback",
                    f"mean latency {cand_lat * 1000:.1f}ms is {ratio:.2f}x the stable "
                    f"{stable_lat * 1000:.1f}ms > max_latency_ratio {r.max_latency_ratio:g}",
                )
        if n < r.min_requests:
            return decision(
                "wait", f"{n}/{r.min_requests} requests on the candidate; send traffic to judge it"
            )
        if elapsed < r.window_seconds:
            return decision(
                "wait",
                f"within bounds so far; {r.window_seconds - elapsed:.1f}s of the window left",
            )
        latency = (
            f", latency {cand_lat / stable_lat:.2f}x" if cand_lat is not None and stable_lat else ""
        )
        return decision(
            "promote",
            f"{n} requests over {elapsed:.1f}s, error rate {candidate.error_rate:.2%}{latency}",
        )


class RolloutTarget(Protocol):
    """Moves traffic of one function between its candidate and stable revisions."""

    def promote(self, function: str) -> None: ...

    def rollback(self, function: str) -> None: ...


@dataclass
class _Canary:
    function: str
    controller: CanaryController
    base_candidate: RevisionStats
    base_stable: RevisionStats


Reader = Callable[[str], dict[str, RevisionStats]]
"""``read(function) -> {revision: cumulative stats}``."""


@dataclass(frozen=True)
class Split:
    """A function whose latest revision has a canary share of traffic."""

    function: str
    rollout: Rollout
    candidate: str
    stable: str


Finder = Callable[[], list[Split]]
"""Finds the canaries to judge (new revisions with a split of traffic)."""


class CanaryDriver:
    """Runs the controllers of every active canary; one thread, explicit start/stop.

    Args:
        read: reads a function's per-revision cumulative counters.
        target: applies promote / rollback.
        clock: monotonic seconds (injectable).
        tick_seconds: how often canaries are judged.
        on_decision: called with each final decision (for logs, events, tests).
        find: optional; finds new canaries at each tick (each candidate is judged once).
    """

    def __init__(
        self,
        read: Reader,
        target: RolloutTarget,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick_seconds: float = 1.0,
        on_decision: Callable[[str, CanaryDecision], None] | None = None,
        find: Finder | None = None,
    ) -> None:
        self._read = read
        self._find = find
        self._seen: set[tuple[str, str]] = set()
        self._target = target
        self._clock = clock
        self.tick_seconds = tick_seconds
        self._on_decision = on_decision
        self._canaries: dict[str, _Canary] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.history: list[tuple[str, CanaryDecision]] = []

    def begin(self, function: str, rollout: Rollout, *, candidate: str, stable: str) -> None:
        """Start judging ``candidate`` (already given its share of traffic) against ``stable``."""
        self._seen.add((function, candidate))
        stats = self._read(function)
        controller = CanaryController(
            rollout, candidate=candidate, stable=stable, started_at=self._clock()
        )
        with self._lock:
            self._canaries[function] = _Canary(
                function,
                controller,
                stats.get(candidate, RevisionStats(candidate)),
                stats.get(stable, RevisionStats(stable)),
            )
        log.info("canary of %s begins: %s against %s", function, candidate, stable)

    @property
    def active(self) -> list[str]:
        with self._lock:
            return sorted(self._canaries)

    def tick(self) -> list[tuple[str, CanaryDecision]]:
        """Judge every active canary once; apply and return the final decisions."""
        if self._find is not None:
            for split in self._find():
                if (split.function, split.candidate) not in self._seen:
                    self.begin(
                        split.function,
                        split.rollout,
                        candidate=split.candidate,
                        stable=split.stable,
                    )
        with self._lock:
            canaries = list(self._canaries.values())
        done: list[tuple[str, CanaryDecision]] = []
        for c in canaries:
            stats = self._read(c.function)
            ctl = c.controller
            cand = stats.get(ctl.candidate, RevisionStats(ctl.candidate)).since(c.base_candidate)
            stable = stats.get(ctl.stable, RevisionStats(ctl.stable)).since(c.base_stable)
            d = ctl.decide(cand, stable, now=self._clock())
            if d.action == "wait":
                continue
            try:
                if d.action == "promote":
                    self._target.promote(c.function)
                else:
                    self._target.rollback(c.function)
            except (ConnectionError, ValueError, MlfnError) as err:
                log.error("canary of %s: cannot %s: %s; will retry", c.function, d.action, err)
                continue
            log.info("canary of %s: %s %s: %s", c.function, d.action, ctl.candidate, d.reason)
            with self._lock:
                self._canaries.pop(c.function, None)
                self.history.append((c.function, d))
            done.append((c.function, d))
            if self._on_decision is not None:
                self._on_decision(c.function, d)
        return done

    def start(self) -> CanaryDriver:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="mlfn-canary", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.tick()
            except Exception:  # a bad read must not end the controller
                log.exception("canary tick failed; retrying at the next tick")
        log.info("canary driver stopped: stop() was called")
