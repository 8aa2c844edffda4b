"""The canary controller (pure) and its driver (with a recording rollout target)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from localplatform.canary import CanaryController, CanaryDriver, RevisionStats, histogram_quantile
from runtime.spec import Rollout

pytestmark = pytest.mark.unit


def ctl(weight: int = 20, **rollout: Any) -> CanaryController:
    rollout.setdefault("strategy", "canary")
    return CanaryController(Rollout(**rollout), candidate="p-2", stable="p-1", weight=weight)


def page(ok: int = 0, failed: int = 0, seconds: float = 0.01, **quality: float) -> RevisionStats:
    """The stats of what a real server's /metrics shows after these requests."""
    from localplatform.canary_io import parse_metrics
    from runtime.server.metrics import Metrics

    m = Metrics("predict", revision="p-2")
    if quality:
        m.show_model("digits", 2, {"metrics": quality})
    for _ in range(ok):
        m.observe(200, seconds)
    for _ in range(failed):
        m.observe(500, seconds)
    return parse_metrics("p-2", m.render().decode())


def test_histogram_quantile_interpolates_as_prometheus_does() -> None:
    inf = float("inf")
    assert histogram_quantile(0.5, ((0.1, 0), (0.2, 10), (inf, 10))) == pytest.approx(0.15)
    assert histogram_quantile(0.99, ((0.1, 50), (1.0, 100), (inf, 100))) == pytest.approx(0.982)
    assert histogram_quantile(0.99, ((0.1, 50), (inf, 100))) == 0.1  # in +Inf: highest bound
    assert histogram_quantile(0.99, ((0.1, 0), (inf, 0))) is None


def test_each_passing_check_adds_step_weight_until_max_weight_then_promotes() -> None:
    c = ctl(step_weight=20, max_weight=60)
    actions = [(d.action, d.weight) for d in (c.check(page(ok=50)) for _ in range(3))]
    assert actions == [("advance", 40), ("advance", 60), ("promote", 100)]


def test_failed_checks_halt_and_threshold_of_them_roll_back_at_the_next_check() -> None:
    c = ctl(threshold=2, min_success_rate=99)
    first = c.check(page(ok=90, failed=10))
    assert (first.action, first.weight, first.failed_checks) == ("halt", 20, 1)
    assert "request-success-rate 90.00% < 99%" in first.reason
    assert c.check(page(ok=50)).action == "advance"  # a passing check: failures still count
    assert c.check(page(ok=0, failed=5)).failed_checks == 2
    d = c.check(page(ok=50))
    assert (d.action, d.weight) == ("rollback", 0)
    assert "failed checks threshold reached 2" in d.reason


def test_an_interval_without_requests_is_a_failed_check() -> None:
    d = ctl().check(page())
    assert d.action == "halt" and "no values found for request-success-rate" in d.reason


def test_p99_latency_not_the_mean_is_checked() -> None:
    # 97 fast requests and 3 of 2s: the mean is ~70ms, the p99 is in the 2.5s bucket
    fast, slow = page(ok=97, seconds=0.005), page(ok=3, seconds=2.0)
    both = RevisionStats(
        "p-2",
        100,
        0,
        tuple((le, n + dict(slow.buckets)[le]) for le, n in fast.buckets),
    )
    d = ctl(max_latency_p99=0.5).check(both)
    assert d.action == "halt"
    assert "request-duration-p99" in d.reason and "> 500.0ms" in d.reason
    assert ctl(max_latency_p99=0.5).check(fast).action == "advance"


def test_model_quality_below_the_minimum_fails_and_missing_quality_too() -> None:
    c = ctl(min_model_quality=0.9, threshold=1)
    d = c.check(page(ok=50, accuracy=0.42))
    assert d.action == "halt" and "model-quality accuracy 0.42 < 0.9" in d.reason
    assert c.check(page(ok=50, accuracy=0.95)).action == "rollback"
    missing = ctl(min_model_quality=0.9).check(page(ok=50))
    assert "no values found for model-quality (accuracy)" in missing.reason
    assert ctl(min_model_quality=0.9, quality_metric="f1").check(page(ok=5, f1=0.91)).action == (
        "advance"
    )


def test_blue_green_counts_iterations_then_promotes() -> None:
    c = ctl(weight=0, iterations=3)
    actions = [c.check(page(ok=10)).action for _ in range(3)]
    assert actions == ["halt", "halt", "promote"]
    assert c.weight == 100


def test_since_subtracts_the_baseline_and_survives_a_counter_reset() -> None:
    later = RevisionStats("r", 50, 2, ((0.1, 40), (math.inf, 50)), {"accuracy": 0.9})
    base = RevisionStats("r", 20, 1, ((0.1, 15), (math.inf, 20)))
    assert later.since(base) == RevisionStats(
        "r", 30, 1, ((0.1, 25), (math.inf, 30)), {"accuracy": 0.9}
    )
    assert later.since(RevisionStats("r", 80, 0)) == later


class Target:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def set_weight(self, function: str, percent: int) -> None:
        self.calls.append((f"weight {percent}", function))

    def promote(self, function: str) -> None:
        self.calls.append(("promote", function))

    def rollback(self, function: str) -> None:
        self.calls.append(("rollback", function))


def test_driver_checks_each_interval_on_that_interval_s_counts() -> None:
    counters = {"p-2": RevisionStats("p-2", 1000, 50)}
    now = [0.0]
    target = Target()
    driver = CanaryDriver(lambda fn: dict(counters), target, clock=lambda: now[0])
    rollout = Rollout(strategy="canary", step_weight=25, max_weight=50, interval=10)
    driver.begin("predict", rollout, candidate="p-2", stable="p-1", weight=25)
    # errors from before the canary began do not count
    counters["p-2"] = page(ok=40)
    counters["p-2"] = RevisionStats("p-2", 1040, 50, counters["p-2"].buckets)
    assert driver.tick() == []  # the interval has not passed
    now[0] = 10.0
    [(_, d)] = driver.tick()
    assert (d.action, d.weight) == ("advance", 50)
    now[0] = 20.0
    [(_, d)] = driver.tick()  # no requests since the last check
    assert d.action == "halt" and d.failed_checks == 1
    assert target.calls == [("weight 50", "predict")]
    assert driver.active == ["predict"]


def test_driver_rolls_back_on_model_quality_from_real_metrics_pages() -> None:
    """A version whose holdout accuracy is below the bound is rolled back without errors."""
    counters = {"p-2": page()}
    now = [0.0]
    target = Target()
    seen: list[str] = []
    driver = CanaryDriver(
        lambda fn: dict(counters),
        target,
        clock=lambda: now[0],
        interval_seconds=1.0,
        on_decision=lambda fn, d: seen.append(d.action),
    )
    rollout = Rollout(strategy="canary", min_model_quality=0.9, threshold=2)
    driver.begin("predict", rollout, candidate="p-2", stable="p-1", weight=20)
    for step, ok in enumerate((30, 60, 90), start=1):
        counters["p-2"] = page(ok=ok, accuracy=0.5)
        now[0] = float(step)
        driver.tick()
    assert seen == ["rollback"]
    assert target.calls == [("rollback", "predict")]
    assert driver.active == []


def test_parse_metrics_reads_what_the_server_exports() -> None:
    from localplatform.canary_io import parse_metrics
    from runtime.server.metrics import Metrics

    m = Metrics("predict")
    m.show_model("digits", 3, {"metrics": {"accuracy": 0.93, "train_rows": 1000}})
    for _ in range(8):
        m.observe(200, 0.010)
    m.observe(500, 0.020)
    m.observe(503, 0.030)
    stats = parse_metrics("predict-00002", m.render().decode())
    assert (stats.revision, stats.requests, stats.errors) == ("predict-00002", 10, 2)
    assert dict(stats.buckets)[0.01] == 8 and stats.buckets[-1] == (math.inf, 10)
    assert stats.quality == {"accuracy": 0.93, "train_rows": 1000.0}


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
    assert (stats.requests, stats.errors, dict(stats.buckets)[0.5]) == (2, 0, 2)


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
        "predict": Rollout(strategy="canary", step_weight=20, max_weight=20),
        "other": Rollout(strategy="replace"),
        "solo": Rollout(strategy="canary"),
    }
    find = local_splits(lambda: state, policies.get)
    [split] = find()
    assert (split.function, split.candidate, split.stable, split.weight) == (
        "predict",
        "p-2",
        "p-1",
        20,
    )

    now = [0.0]
    target = Target()
    driver = CanaryDriver(
        lambda fn: {"p-2": page(ok=int(now[0]) * 10)}, target, clock=lambda: now[0], find=find
    )
    assert driver.tick() == [] and driver.active == ["predict"]
    now[0] = 30.0
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


def test_a_check_whose_scrape_reached_no_instance_is_skipped_not_failed() -> None:
    counters = {"p-2": RevisionStats("p-2", answered=0)}
    now = [0.0]
    target = Target()
    driver = CanaryDriver(lambda fn: dict(counters), target, clock=lambda: now[0])
    driver.begin("predict", Rollout(strategy="canary", threshold=1), candidate="p-2",
                 stable="p-1", weight=20)  # fmt: skip
    for t in (30.0, 60.0):
        now[0] = t
        assert driver.tick() == []  # nothing read: neither a failed check nor a rollback
    counters["p-2"] = page(ok=10)
    now[0] = 90.0
    [(_, d)] = driver.tick()
    assert d.action == "advance" and target.calls == [("weight 40", "predict")]
