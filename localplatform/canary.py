"""Canary analysis on the local platform, with Flagger's state machine and parameters.

On a cluster, Flagger runs a function's canary (:mod:`knative.manifests.flagger` renders
its ``Canary``); ``mlfn dev`` runs this module instead, so that one
:class:`~runtime.spec.Rollout` means one behaviour on both back ends. Every ``interval``
(Flagger's ``analysis.interval``) the candidate's requests *of the last interval* are
checked, as Flagger's ``MetricTemplate`` queries do:

- success rate (non-5xx, percent) at least ``min_success_rate``;
- p99 latency (from the latency histogram, as ``histogram_quantile``) at most
  ``max_latency_p99``;
- with ``min_model_quality``: the served version's ``quality_metric`` at least that.

A check without data (no requests in the interval, no quality figure) fails, as
Flagger's "no values found" does. Then, like Flagger's scheduler:

1. ``failed_checks >= threshold`` (counted before this check): **rollback**;
2. a failing check: ``failed_checks += 1``, **halt** (the weight stays);
3. a passing check: below ``max_weight`` **advance** by ``step_weight`` (capped at
   100), at or above it **promote**. Blue/green (``iterations > 0``): count the
   passing check; after ``iterations`` of them **promote**.

Flagger starts a canary at weight 0 and sets ``step_weight`` at its first interval; the
local platform gives a new canary revision ``step_weight`` % at once (blue/green: 0 %).

:class:`CanaryController` is pure: counters and an explicit ``now`` in, a decision out.
:class:`CanaryDriver` is the thin loop around it: it reads per-revision cumulative
counters through a ``read`` callable, turns them into the counts of each interval, and
applies the decisions through a :class:`RolloutTarget`. :mod:`localplatform.canary_io`
holds the readers and the target of a running ``mlfn dev``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    "histogram_quantile",
]

log = logging.getLogger(__name__)

CanaryAction = Literal["advance", "halt", "promote", "rollback"]
FINAL: frozenset[str] = frozenset({"promote", "rollback"})

Buckets = tuple[tuple[float, int], ...]
"""A latency histogram: cumulative ``(le, count)`` pairs, ascending, ending with ``inf``."""


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of a cumulative histogram, as Prometheus' ``histogram_quantile``.

    Linear interpolation inside the bucket that holds the rank; the lower bound of the
    first bucket is 0; a rank in the ``+Inf`` bucket answers the highest finite bound.
    None when the histogram is empty.

    Example:
        >>> histogram_quantile(0.5, ((0.1, 0), (0.2, 10), (math.inf, 10)))
        0.15
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


@dataclass(frozen=True)
class RevisionStats:
    """Cumulative counters of one revision.

    Attributes:
        requests: requests answered.
        errors: 5xx responses among them.
        buckets: the latency histogram (see :data:`Buckets`).
        quality: the served model version's quality figures (``accuracy``, ...), the
            lowest over the revision's instances; a gauge, not a counter.
        answered: how many instances' ``/metrics`` were read (None: not scraped). A
            reading of zero instances is no reading at all: the driver skips that check
            instead of counting it as failed (a scrape that times out on a busy laptop is
            not the candidate's fault; Flagger's Prometheus does not have this gap).
    """

    revision: str
    requests: int = 0
    errors: int = 0
    buckets: Buckets = ()
    quality: Mapping[str, float] = field(default_factory=dict)
    answered: int | None = None

    @property
    def success_rate(self) -> float | None:
        """Percent of non-5xx responses; None without requests."""
        return 100.0 * (self.requests - self.errors) / self.requests if self.requests else None

    @property
    def p99(self) -> float | None:
        """99th percentile latency in seconds; None without requests."""
        return histogram_quantile(0.99, self.buckets)

    def since(self, base: RevisionStats) -> RevisionStats:
        """Counts since ``base`` (a counter that went down means a restart: keep it whole)."""
        if self.requests < base.requests or self.errors < base.errors:
            return self
        old = dict(base.buckets)
        return RevisionStats(
            self.revision,
            self.requests - base.requests,
            self.errors - base.errors,
            tuple((le, max(0, n - old.get(le, 0))) for le, n in self.buckets),
            self.quality,
            self.answered,
        )


@dataclass(frozen=True)
class CanaryDecision:
    """What was done with the candidate at one check, why, and the figures behind it."""

    action: CanaryAction
    reason: str
    weight: int
    failed_checks: int
    candidate: RevisionStats

    @property
    def final(self) -> bool:
        return self.action in FINAL


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms"


class CanaryController:
    """The analysis of one canary: weight, failed checks, iterations (Flagger's status).

    Args:
        rollout: the function's rollout policy (``strategy="canary"``).
        candidate: the new revision's name.
        stable: the revision it replaces.
        weight: the candidate's share of traffic now.
    """

    def __init__(self, rollout: Rollout, *, candidate: str, stable: str, weight: int) -> None:
        self.rollout = rollout
        self.candidate = candidate
        self.stable = stable
        self.weight = weight
        self.failed_checks = 0
        self.iterations = 0

    def problems(self, stats: RevisionStats) -> list[str]:
        """Why the candidate's counts of one interval fail the checks (empty: they pass)."""
        r = self.rollout
        rate, p99 = stats.success_rate, stats.p99
        out = []
        if rate is None:
            out.append("no values found for request-success-rate: no requests in the interval")
        elif rate < r.min_success_rate:
            out.append(
                f"request-success-rate {rate:.2f}% < {r.min_success_rate:g}% "
                f"({stats.errors}/{stats.requests} 5xx)"
            )
        limit = r.max_latency_p99.total_seconds()
        if p99 is None:
            if rate is not None:
                out.append("no values found for request-duration-p99")
        elif p99 > limit:
            out.append(f"request-duration-p99 {_ms(p99)} > {_ms(limit)}")
        if r.min_model_quality is not None:
            q = stats.quality.get(r.quality_metric)
            if q is None:
                out.append(f"no values found for model-quality ({r.quality_metric})")
            elif q < r.min_model_quality:
                out.append(f"model-quality {r.quality_metric} {q:.4g} < {r.min_model_quality:g}")
        return out

    def check(self, stats: RevisionStats) -> CanaryDecision:
        """One analysis interval: ``stats`` are the candidate's counts of that interval."""
        r = self.rollout

        def decision(action: CanaryAction, reason: str) -> CanaryDecision:
            return CanaryDecision(action, reason, self.weight, self.failed_checks, stats)

        if self.failed_checks >= r.threshold:
            self.weight = 0
            return decision("rollback", f"failed checks threshold reached {self.failed_checks}")
        problems = self.problems(stats)
        if problems:
            self.failed_checks += 1
            return decision("halt", "; ".join(problems))
        if r.iterations:
            self.iterations += 1
            if self.iterations < r.iterations:
                return decision("halt", f"iteration {self.iterations}/{r.iterations} passed")
            self.weight = 100
            return decision("promote", f"{r.iterations} iterations passed")
        if self.weight < r.max_weight:
            self.weight = min(100, self.weight + r.step_weight)
            return decision("advance", f"checks passed; canary weight {self.weight}")
        self.weight = 100
        return decision("promote", f"checks passed at weight {r.max_weight}")


class RolloutTarget(Protocol):
    """Moves traffic of one function between its candidate and stable revisions."""

    def set_weight(self, function: str, percent: int) -> None: ...

    def promote(self, function: str) -> None: ...

    def rollback(self, function: str) -> None: ...


Reader = Callable[[str], dict[str, RevisionStats]]
"""``read(function) -> {revision: cumulative stats}``."""


@dataclass(frozen=True)
class Split:
    """A function whose latest revision is a canary candidate."""

    function: str
    rollout: Rollout
    candidate: str
    stable: str
    weight: int


Finder = Callable[[], list[Split]]
"""Finds the canaries to judge (new revisions with a split of traffic)."""


@dataclass
class _Canary:
    function: str
    controller: CanaryController
    base: RevisionStats
    checked_at: float


class CanaryDriver:
    """Runs the controllers of every active canary; one thread, explicit start/stop.

    Args:
        read: reads a function's per-revision cumulative counters.
        target: applies weights, promotions and rollbacks.
        clock: monotonic seconds (injectable).
        tick_seconds: how often the driver looks for due checks (not the interval).
        interval_seconds: overrides every rollout's ``interval`` (tests, demos).
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
        interval_seconds: float | None = None,
        on_decision: Callable[[str, CanaryDecision], None] | None = None,
        find: Finder | None = None,
    ) -> None:
        self._read = read
        self._find = find
        self._seen: set[tuple[str, str]] = set()
        self._target = target
        self._clock = clock
        self.tick_seconds = tick_seconds
        self.interval_seconds = interval_seconds
        self._on_decision = on_decision
        self._canaries: dict[str, _Canary] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.history: list[tuple[str, CanaryDecision]] = []

    def interval(self, rollout: Rollout) -> float:
        if self.interval_seconds is not None:
            return self.interval_seconds
        return rollout.interval.total_seconds()

    def begin(
        self, function: str, rollout: Rollout, *, candidate: str, stable: str, weight: int
    ) -> None:
        """Start judging ``candidate`` (already given ``weight`` % of traffic)."""
        self._seen.add((function, candidate))
        base = self._read(function).get(candidate, RevisionStats(candidate))
        controller = CanaryController(rollout, candidate=candidate, stable=stable, weight=weight)
        with self._lock:
            self._canaries[function] = _Canary(function, controller, base, self._clock())
        log.info(
            "canary of %s begins: %s against %s at weight %d", function, candidate, stable, weight
        )

    @property
    def active(self) -> list[str]:
        with self._lock:
            return sorted(self._canaries)

    def tick(self) -> list[tuple[str, CanaryDecision]]:
        """Check every canary whose interval has passed; apply and return the decisions."""
        if self._find is not None:
            for split in self._find():
                if (split.function, split.candidate) not in self._seen:
                    self.begin(
                        split.function,
                        split.rollout,
                        candidate=split.candidate,
                        stable=split.stable,
                        weight=split.weight,
                    )
        with self._lock:
            canaries = list(self._canaries.values())
        done: list[tuple[str, CanaryDecision]] = []
        for c in canaries:
            ctl = c.controller
            now = self._clock()
            if now - c.checked_at < self.interval(ctl.rollout):
                continue
            current = self._read(c.function).get(ctl.candidate, RevisionStats(ctl.candidate))
            if current.answered == 0:
                log.warning(
                    "canary of %s: no instance of %s answered its /metrics; check skipped",
                    c.function,
                    ctl.candidate,
                )
                c.checked_at = now
                continue
            before = (ctl.weight, ctl.failed_checks, ctl.iterations)
            d = ctl.check(current.since(c.base))
            try:
                if d.action == "promote":
                    self._target.promote(c.function)
                elif d.action == "rollback":
                    self._target.rollback(c.function)
                elif d.action == "advance":
                    self._target.set_weight(c.function, d.weight)
            except (ConnectionError, ValueError, MlfnError) as err:
                ctl.weight, ctl.failed_checks, ctl.iterations = before
                log.error("canary of %s: cannot %s: %s; will retry", c.function, d.action, err)
                continue
            c.base, c.checked_at = current, now
            log.info("canary of %s: %s %s: %s", c.function, d.action, ctl.candidate, d.reason)
            done.append((c.function, d))
            if d.final:
                with self._lock:
                    self._canaries.pop(c.function, None)
                    self.history.append((c.function, d))
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
