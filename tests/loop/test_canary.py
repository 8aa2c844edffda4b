"""The canary controller (pure) and its driver (with a recording rollout target)."""

from __future__ import annotations

from typing import Any

import pytest

from localplatform.canary import CanaryController, CanaryDriver, RevisionStats
from runtime.spec import Rollout

pytestmark = pytest.mark.unit


def ctl(**rollout: Any) -> CanaryController:
    rollout.setdefault("strategy", "canary")
    return CanaryController(Rollout(**rollout), candidate="p-2", stable="p-1", started_at=100.0)


def stats(rev: str, n: int, errors: int = 0, latency: float = 0.01) -> RevisionStats:
    return RevisionStats(rev, n, errors, latency * n)


def test_promotes_after_the_window_within_bounds() -> None:
    c = ctl(window_seconds=30, min_requests=20)
    good = stats("p-2", 40)
    assert c.decide(good, stats("p-1", 160), now=110.0).action == "wait"
    d = c.decide(good, stats("p-1", 160), now=130.0)
    assert d.action == "promote"
    assert "40 requests" in d.reason and "latency 1.00x" in d.reason


def test_waits_for_enough_requests_even_after_the_window() -> None:
    d = ctl(window_seconds=1, min_requests=20).decide(stats("p-2", 5), stats("p-1", 50), now=500)
    assert d.action == "wait"
    assert "5/20 requests" in d.reason


def test_rolls_back_on_errors_above_the_bound() -> None:
    d = ctl(max_error_rate=0.05, min_requests=20).decide(
        stats("p-2", 40, errors=3), stats("p-1", 100), now=101.0
    )
    assert d.action == "rollback"
    assert "7.50% (3/40)" in d.reason


def test_rolls_back_early_when_errors_already_exceed_the_budget() -> None:
    # 2 errors in 3 requests: even 20 requests could not bring it under 5%
    d = ctl(max_error_rate=0.05, min_requests=20).decide(
        stats("p-2", 3, errors=2), stats("p-1", 10), now=100.5
    )
    assert d.action == "rollback"


def test_one_early_error_within_the_budget_waits() -> None:
    d = ctl(max_error_rate=0.1, min_requests=20).decide(
        stats("p-2", 2, errors=1), stats("p-1", 10), now=100.5
    )
    assert d.action == "wait"


def test_rolls_back_on_latency_above_the_ratio() -> None:
    d = ctl(max_latency_ratio=1.5, min_requests=20).decide(
        stats("p-2", 30, latency=0.020), stats("p-1", 100, latency=0.010), now=101
    )
    assert d.action == "rollback"
    assert "2.00x" in d.reason


def test_since_subtracts_the_baseline_and_survives_a_counter_reset() -> None:
    now = RevisionStats("r", 50, 2, 1.0)
    assert now.since(RevisionStats("r", 20, 1, 0.4)) == RevisionStats("r", 30, 1, 0.6)
    assert now.since(RevisionStats("r", 80, 0, 2.0)) == now


class Target:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def promote(self, function: str) -> None:
        self.calls.append(("promote", function))

    def rollback(self, function: str) -> None:
        self.calls.append(("rollback", function))


def test_driver_counts_from_the_canary_start_and_applies_the_decision() -> None:
    counters = {"p-1": RevisionStats("p-1", 1000, 50, 10.0), "p-2": RevisionStats("p-2", 0)}
    now = [0.0]
    target = Target()
    driver = CanaryDriver(lambda fn: dict(counters), target, clock=lambda: now[0])
    rollout = Rollout(strategy="canary", window_seconds=10, min_requests=10, max_error_rate=0.01)
    driver.begin("predict", rollout, candidate="p-2", stable="p-1")
    # the stable revision's old errors (5%) are before the canary: they do not count
    counters["p-1"] = RevisionStats("p-1", 1040, 50, 10.4)
    counters["p-2"] = RevisionStats("p-2", 10, 0, 0.1)
    assert driver.tick() == []
    now[0] = 11.0
    [(fn, d)] = driver.tick()
    assert (fn, d.action) == ("predict", "promote")
    assert target.calls == [("promote", "predict")]
    assert driver.active == []
    assert driver.tick() == []


def test_driver_rolls_back_a_failing_candidate() -> None:
    counters = {"p-1": RevisionStats("p-1", 0), "p-2": RevisionStats("p-2", 0)}
    target = Target()
    driver = CanaryDriver(lambda fn: dict(counters), target, clock=lambda: 0.0)
    driver.begin(
        "predict", Rollout(strategy="canary", min_requests=5), candidate="p-2", stable="p-1"
    )
    counters["p-2"] = RevisionStats("p-2", 6, 6, 0.1)
    [(_, d)] = driver.tick()
    assert d.action == "rollback"
    assert target.calls == [("rollback", "predict")]


def test_parse_metrics_reads_what_the_server_exports() -> None:
    from localplatform.canary_io import parse_metrics
    from runtime.server.metrics import Metrics

    m = Metrics("predict")
    for _ in range(8):
        m.observe(200, 0.010)
    m.observe(500, 0.020)
    m.observe(503, 0.030)
    stats = parse_metrics("predict-00002", m.render().decode())
    assert (stats.revision, stats.requests, stats.errors) == ("predict-00002", 10, 2)
    assert stats.latency_sum == pytest.approx(0.13)


def test_scrape_sums_instances_and_skips_unreachable_ones() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from localplatform.canary_io import scrape
    from runtime.server.metrics import Metrics

    m = Metrics("predict")
    m.observe(200, 0.5)
    page = m.render()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        stats = scrape("r", [url, url, dead_url()])
    finally:
        server.shutdown()
        server.server_close()
    assert (stats.requests, stats.errors, stats.latency_sum) == (2, 0, 1.0)


def dead_url() -> str:
    """A loopback URL where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_the_driver_finds_new_canaries_and_judges_each_candidate_once() -> None:
    from localplatform.canary_io import local_splits

    state: dict[str, Any] = {
        "functions": {
            "predict": {"latest": "p-2", "traffic": {"p-1": 80, "p-2": 20}},
            "other": {"latest": "o-2", "traffic": {"o-1": 80, "o-2": 20}},  # replace strategy
            "solo": {"latest": "s-1", "traffic": {"s-1": 100}},
        }
    }
    policies = {
        "predict": Rollout(strategy="canary", window_seconds=1, min_requests=0),
        "other": Rollout(strategy="replace"),
        "solo": Rollout(strategy="canary"),
    }
    find = local_splits(lambda: state, policies.get)
    [split] = find()
    assert (split.function, split.candidate, split.stable) == ("predict", "p-2", "p-1")

    now = [0.0]
    target = Target()
    driver = CanaryDriver(lambda fn: {}, target, clock=lambda: now[0], find=find)
    assert driver.tick() == [] and driver.active == ["predict"]
    now[0] = 2.0
    [(fn, d)] = driver.tick()
    assert (fn, d.action) == ("predict", "promote")
    assert driver.tick() == [] and driver.active == []  # not judged twice
    assert target.calls == [("promote", "predict")]


def test_a_rolled_back_revision_gets_no_traffic_from_the_next_canary() -> None:
    import random

    from localplatform.routing import Traffic

    t = Traffic()
    t.add("r1")
    t.add("r2", 20)
    t.rollback()  # r2 was broken
    t.add("r3", 20)  # the fix: a canary against r1, the revision that serves
    assert t.percent == {"r3": 20, "r1": 80}
    t.promote()
    t.rollback()
    assert t.percent == {"r1": 100}
    assert {t.pick(random.Random(i)) for i in range(50)} == {"r1"}
