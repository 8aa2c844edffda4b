"""The KPA logic, driven with a made-up clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from localplatform.autoscaler import Autoscaler, ConcurrencyWindow, Policy
from localplatform.effective import effective_spec
from localplatform.settings import PlatformSettings
from runtime.spec import FunctionSpec, Scaling

pytestmark = pytest.mark.unit


def steady(window: ConcurrencyWindow, start: float, end: float, level: int) -> None:
    window.record(start, level)
    window.record(end, level)


def test_window_time_weighted_average() -> None:
    w = ConcurrencyWindow(0.0)
    w.record(0.0, 4)
    w.record(3.0, 0)
    assert w.average(6.0, 6.0) == pytest.approx(2.0)
    assert w.average(6.0, 3.0) == pytest.approx(0.0)
    assert w.last_active == 3.0


def test_window_survives_awkward_float_times() -> None:
    w = ConcurrencyWindow(0.0)
    t = 0.0
    for i in range(2000):
        t += 0.1 + 1e-17 * i
        w.record(t, i % 3)
    assert w.average(t, 6.0) >= 0.0


def test_window_counts_a_request_still_in_flight() -> None:
    w = ConcurrencyWindow(0.0)
    w.record(1.0, 2)
    assert w.average(4.0, 2.0) == pytest.approx(2.0)


def policy(**kw: float) -> Policy:
    scaling = Scaling(max_scale=100, stable_window=timedelta(seconds=6))
    base = Policy.from_scaling(scaling, PlatformSettings(scale_to_zero_grace_seconds=2.0))
    return replace(base, **{"utilization": 1.0, **kw})  # type: ignore[arg-type]


def test_desired_is_ceil_of_concurrency_over_target_times_utilization() -> None:
    a = Autoscaler(policy(target=10.0, utilization=0.7), 0.0)
    w = ConcurrencyWindow(0.0)
    steady(w, 0.0, 6.0, 15)  # 15 / 7 -> 3
    d = a.decide(6.0, 3, w)
    assert d.desired == 3 and not d.panicking


def test_panic_on_a_burst_and_no_scale_down_while_panicking() -> None:
    a = Autoscaler(policy(target=1.0), 0.0)
    w = ConcurrencyWindow(0.0)
    steady(w, 0.0, 5.4, 1)
    steady(w, 5.4, 6.0, 8)  # panic window sees 8, stable ~1.7
    d = a.decide(6.0, 1, w)
    assert d.panicking and d.desired == 8
    w.record(6.5, 1)  # the burst ends
    d2 = a.decide(7.0, 8, w)
    assert d2.panicking and d2.desired == 8, "never scales down while panicking"
    d3 = a.decide(13.5, 8, w)  # stable window passed without crossing the threshold
    assert not d3.panicking and d3.desired < 8


def test_max_scale_down_rate_halves_at_most() -> None:
    a = Autoscaler(policy(target=1.0), 0.0)
    w = ConcurrencyWindow(0.0)
    w.record(0.0, 1)
    d = a.decide(10.0, 10, w)
    assert d.desired == 5  # floor(10 / 2)


def test_max_scale_up_rate_limits_growth() -> None:
    a = Autoscaler(policy(target=1.0, max_scale_up_rate=2.0, panic_threshold=1000.0), 0.0)
    w = ConcurrencyWindow(0.0)
    steady(w, 0.0, 6.0, 50)
    assert a.decide(6.0, 2, w).desired == 4


def test_min_and_max_scale_clamp_and_min_applies_only_with_traffic() -> None:
    a = Autoscaler(policy(target=1.0, min_scale=2, max_scale=3), 0.0)
    w = ConcurrencyWindow(0.0)
    steady(w, 0.0, 6.0, 50)
    assert a.decide(6.0, 3, w).desired == 3
    w.record(6.0, 0)
    assert a.decide(30.0, 3, w).desired == 2
    assert a.decide(60.0, 2, w, routable=False).desired == 0


def test_scale_to_zero_waits_for_stable_window_plus_grace() -> None:
    a = Autoscaler(policy(target=1.0), 0.0)
    w = ConcurrencyWindow(0.0)
    w.record(0.0, 1)
    w.record(1.0, 0)
    assert a.decide(7.5, 1, w).desired == 1  # idle 6.5s < 8s
    d = a.decide(9.1, 1, w)
    assert d.desired == 0 and "scale to zero" in d.reason


def test_scale_to_zero_retention_keeps_the_last_instance() -> None:
    a = Autoscaler(policy(target=1.0, scale_to_zero_retention=20.0), 0.0)
    w = ConcurrencyWindow(0.0)
    w.record(0.0, 1)
    w.record(1.0, 0)
    assert a.decide(15.0, 1, w).desired == 1
    assert a.decide(21.5, 1, w).desired == 0


def test_scale_down_delay_keeps_the_highest_recent_decision() -> None:
    a = Autoscaler(policy(target=1.0, scale_down_delay=5.0, panic_threshold=1000.0), 0.0)
    w = ConcurrencyWindow(0.0)
    steady(w, 0.0, 6.0, 4)
    assert a.decide(6.0, 4, w).desired == 4
    w.record(6.0, 1)
    assert a.decide(9.0, 4, w).desired == 4  # within the delay
    assert a.decide(14.0, 4, w).desired < 4


def test_initial_scale_then_poke_from_zero() -> None:
    a = Autoscaler(policy(initial_scale=2), 0.0)
    w = ConcurrencyWindow(0.0)
    assert a.decide(0.5, 0, w).desired == 2
    b = Autoscaler(policy(initial_scale=0, target=2.0), 0.0)
    assert b.decide(0.5, 0, w).desired == 0
    d = b.poke(1.0, 0, 5)
    assert d is not None and d.desired == 3
    assert b.poke(1.0, 1, 5) is None, "the activator pokes only at zero"


def test_a_poked_revision_keeps_one_instance_for_the_request() -> None:
    a = Autoscaler(policy(initial_scale=0, target=1.0), 0.0)
    w = ConcurrencyWindow(0.0)
    w.record(10.0, 1)  # a held request
    assert a.poke(10.0, 0, 1) is not None
    assert a.decide(10.5, 0, w).desired == 1
    w.record(10.6, 0)
    assert a.decide(11.0, 1, w).desired == 1


def _local(scaling: Scaling, platform: PlatformSettings) -> Policy:
    spec = FunctionSpec(name="f", kind="event", module="m", entrypoint="f", scaling=scaling)
    return Policy.from_scaling(effective_spec(spec, platform).scaling, platform)


def test_policy_uses_local_defaults_only_for_unset_fields() -> None:
    local = PlatformSettings(stable_window_seconds=6.0, max_instances=4)
    p = _local(Scaling(), local)
    assert p.stable_window == 6.0 and p.panic_window == pytest.approx(0.6)
    assert p.max_scale == 4 and p.per_instance == pytest.approx(7.0)
    q = _local(Scaling(stable_window=timedelta(seconds=30), max_scale=9), local)
    assert q.stable_window == 30.0 and q.max_scale == 9
