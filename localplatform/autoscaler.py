"""Knative's KPA (concurrency) autoscaler as pure logic, with the clock passed in.

Nothing here does I/O or reads a clock: the platform calls :meth:`ConcurrencyWindow.record`
whenever a revision's in-flight count changes, and :meth:`Autoscaler.decide` once per tick
with ``now``. Tests drive both with made-up times.

The algorithm follows ``knative.dev/serving/pkg/autoscaler/scaling/autoscaler.go``:

- ``desired = ceil(observed concurrency / (target * utilization))`` over the stable window
  (the average concurrency) and over the panic window (``panic_window_percentage`` of it);
- both are clamped by the max scale-up rate (``ceil(rate * ready)``) and the max
  scale-down rate (``floor(ready / rate)``);
- when the panic estimate reaches ``panic_threshold`` times the ready instances, the
  autoscaler panics: it follows the panic estimate and never scales down until the
  stable window has passed without crossing the threshold again;
- ``scale_down_delay`` keeps the highest recommendation of that window;
- scale to zero only after no traffic for the stable window plus the grace period
  (and ``scale_to_zero_retention``); ``min_scale`` applies while the revision has traffic.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta

from localplatform.settings import PlatformSettings
from runtime.spec import Scaling

__all__ = ["Autoscaler", "ConcurrencyWindow", "Decision", "Policy"]


@dataclass(frozen=True)
class Policy:
    """The knobs of one revision's autoscaler, in seconds and instances."""

    target: float
    utilization: float
    stable_window: float
    panic_window: float
    panic_threshold: float
    min_scale: int
    max_scale: int
    initial_scale: int
    scale_down_delay: float
    max_scale_up_rate: float
    max_scale_down_rate: float
    scale_to_zero_grace: float
    scale_to_zero_retention: float
    container_concurrency: int

    @property
    def per_instance(self) -> float:
        """Concurrency one instance should carry: target times utilization."""
        return self.target * self.utilization

    @classmethod
    def from_scaling(cls, scaling: Scaling, platform: PlatformSettings) -> Policy:
        """The policy of an effective :class:`~runtime.spec.Scaling` (see
        :func:`localplatform.effective.effective_spec`), with the platform's rates.
        """
        stable = scaling.stable_window.total_seconds()
        return cls(
            target=scaling.target,
            utilization=scaling.target_utilization_percentage / 100.0,
            stable_window=stable,
            panic_window=stable * scaling.panic_window_percentage / 100.0,
            panic_threshold=scaling.panic_threshold_percentage / 100.0,
            min_scale=scaling.min_scale,
            max_scale=scaling.max_scale,
            initial_scale=scaling.initial_scale,
            scale_down_delay=_seconds(scaling.scale_down_delay),
            max_scale_up_rate=platform.max_scale_up_rate,
            max_scale_down_rate=platform.max_scale_down_rate,
            scale_to_zero_grace=platform.scale_to_zero_grace_seconds,
            scale_to_zero_retention=_seconds(scaling.scale_to_zero_retention),
            container_concurrency=scaling.container_concurrency,
        )


def _ceil(x: float) -> int:
    """``ceil``, ignoring float dust left by summing areas (1e-17 must not keep a pod)."""
    return math.ceil(x - 1e-9) if x > 1e-9 else 0


def _seconds(d: timedelta) -> float:
    return d.total_seconds()


class ConcurrencyWindow:
    """Time-weighted average of a revision's in-flight requests over recent windows.

    Call :meth:`record` with the new in-flight count each time it changes; the area under
    the curve is kept in buckets of ``granularity`` seconds for ``horizon`` seconds.
    """

    def __init__(self, now: float, *, granularity: float = 0.1, horizon: float = 120.0) -> None:
        self.granularity = granularity
        self.horizon = horizon
        self._buckets: deque[tuple[int, float]] = deque()
        self._level = 0
        self._since = now
        self.last_active = now

    @property
    def level(self) -> int:
        """The in-flight count now."""
        return self._level

    def record(self, now: float, in_flight: int) -> None:
        """The in-flight count changed to ``in_flight`` at ``now``."""
        self._advance(now)
        self._level = in_flight
        if in_flight > 0:
            self.last_active = now

    def _advance(self, now: float) -> None:
        start, level = self._since, self._level
        if now <= start:
            return
        if level:
            self.last_active = now
            g = self.granularity
            first, last = int(start // g), int(now // g)
            if first == last:
                self._add(first, level * (now - start))
            else:
                self._add(first, level * max(0.0, (first + 1) * g - start))
                for index in range(max(first + 1, last - int(self.horizon / g)), last):
                    self._add(index, level * g)
                self._add(last, level * max(0.0, now - last * g))
        self._since = now
        oldest = int((now - self.horizon) // self.granularity)
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def _add(self, index: int, area: float) -> None:
        if self._buckets and self._buckets[-1][0] == index:
            self._buckets[-1] = (index, self._buckets[-1][1] + area)
        else:
            self._buckets.append((index, area))

    def average(self, now: float, window: float) -> float:
        """Average concurrency over ``[now - window, now]``."""
        self._advance(now)
        g = self.granularity
        start = now - window
        first = int(start // g)
        area = 0.0
        for index, value in reversed(self._buckets):
            if index < first:
                break
            if index == first:  # only the part of the first bucket inside the window
                value *= min(1.0, max(0.0, ((first + 1) * g - start) / g))
            area += value
        return area / window if window > 0 else float(self._level)


@dataclass(frozen=True)
class Decision:
    """One autoscaler recommendation, kept for ``mlfn status``."""

    at: float
    desired: int
    ready: int
    stable: float
    panic: float
    panicking: bool
    reason: str


@dataclass
class Autoscaler:
    """The KPA decision for one revision. Holds only the state Knative's autoscaler holds."""

    policy: Policy
    created: float
    _panic_since: float | None = None
    _max_panic: int = 0
    _delay: deque[tuple[float, int]] = field(default_factory=deque)
    _initial_pending: bool = True

    def _clamp(self, n: int, routable: bool) -> int:
        p = self.policy
        low = p.min_scale if routable else 0
        return max(low, min(n, p.max_scale))

    def initial(self) -> int:
        """Instances a new revision starts with (``initial_scale``, within min/max)."""
        return self._clamp(self.policy.initial_scale, True)

    def poke(self, now: float, ready: int, waiting: int) -> Decision | None:
        """A request arrived with no instance (the activator's poke): scale from zero now."""
        if ready > 0 or waiting <= 0:
            return None
        p = self.policy
        desired = self._clamp(max(1, math.ceil(waiting / p.per_instance)), True)
        self._initial_pending = False
        return Decision(now, desired, ready, 0.0, float(waiting), False, "request at zero")

    def decide(
        self, now: float, ready: int, window: ConcurrencyWindow, *, routable: bool = True
    ) -> Decision:
        """Desired instances at ``now`` given ``ready`` instances and the observed window."""
        p = self.policy
        stable = window.average(now, p.stable_window)
        panic = window.average(now, p.panic_window)
        if self._initial_pending:
            if window.level == 0 and now - window.last_active < p.stable_window:
                n = self.initial() if routable else 0
                return Decision(now, n, ready, stable, panic, False, "initial scale")
            self._initial_pending = False

        base = max(ready, 1)
        max_up = math.ceil(p.max_scale_up_rate * base)
        max_down = math.floor(base / p.max_scale_down_rate) if routable else 0
        stable_pods = min(max(_ceil(stable / p.per_instance), max_down), max_up)
        panic_pods = min(max(_ceil(panic / p.per_instance), max_down), max_up)

        over = panic / p.per_instance / base >= p.panic_threshold and panic > 0
        if over:
            self._panic_since = now
        elif self._panic_since is not None and now - self._panic_since > p.stable_window:
            self._panic_since = None
            self._max_panic = 0

        desired, reason = stable_pods, "stable window"
        if self._panic_since is not None:
            desired = max(panic_pods, self._max_panic)
            self._max_panic = desired
            reason = "panic window"

        if p.scale_down_delay > 0:
            self._delay.append((now, desired))
            while self._delay and self._delay[0][0] < now - p.scale_down_delay:
                self._delay.popleft()
            delayed = max(n for _, n in self._delay)
            if delayed > desired:
                desired, reason = delayed, "scale-down delay"

        if desired == 0 and ready > 0:
            idle = now - window.last_active if window.level == 0 else 0.0
            keep = max(p.stable_window + p.scale_to_zero_grace, p.scale_to_zero_retention)
            if idle < keep:
                desired, reason = 1, f"idle {idle:.1f}s < {keep:.1f}s before scale to zero"
            else:
                reason = f"no traffic for {idle:.1f}s: scale to zero"
        clamped = self._clamp(desired, routable)
        if clamped != desired:
            bound = "min_scale" if clamped > desired else "max_scale"
            desired, reason = clamped, f"{bound} {clamped}"
        return Decision(now, desired, ready, stable, panic, self._panic_since is not None, reason)
