"""Routing by Host header and path prefix, and traffic splits (pure)."""

from __future__ import annotations

import random

import pytest

from localplatform.routing import RolloutError, Route, Traffic, route

pytestmark = pytest.mark.unit

FNS = {"predict", "preprocess"}


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        (b"predict.default.example.com", b"/v2/models", Route("predict", b"/v2/models")),
        (b"Predict.default.example.com:8080", b"/", Route("predict", b"/")),
        (b"predict.default.svc.cluster.local", b"/", Route("predict", b"/")),
        (b"127.0.0.1:8080", b"/predict/v2/x?y=1", Route("predict", b"/v2/x?y=1")),
        (b"127.0.0.1:8080", b"/predict?y=1", Route("predict", b"/?y=1")),
        (b"127.0.0.1:8080", b"/predict", Route("predict", b"/")),
        (None, b"/preprocess/", Route("preprocess", b"/")),
        (b"other.default.example.com", b"/predict/", Route("predict", b"/")),
        (b"predict.otherns.example.com", b"/x", None),
        (b"127.0.0.1", b"/predictor/", None),
        (b"127.0.0.1", b"/", None),
    ],
)
def test_route(host: bytes | None, path: bytes, expected: Route | None) -> None:
    assert route(host, path, FNS, "default", "example.com") == expected


def test_new_revision_takes_all_traffic_by_default() -> None:
    t = Traffic()
    t.add("f-1")
    t.add("f-2")
    assert t.describe() == [("f-1", 0), ("f-2", 100)]
    assert not t.routable("f-1")


def test_canary_add_rollout_promote_rollback() -> None:
    t = Traffic()
    t.add("f-1")
    t.add("f-2", 20)
    assert dict(t.describe()) == {"f-1": 80, "f-2": 20}
    t.rollout(50)
    assert dict(t.describe()) == {"f-1": 50, "f-2": 50}
    t.promote()
    assert dict(t.describe()) == {"f-1": 0, "f-2": 100}
    t.rollback()
    assert dict(t.describe()) == {"f-1": 100, "f-2": 0}


def test_rollout_errors_say_why() -> None:
    t = Traffic()
    with pytest.raises(RolloutError, match="no revision"):
        t.rollout(50)
    t.add("f-1")
    with pytest.raises(RolloutError, match="only one revision"):
        t.rollout(50)
    with pytest.raises(RolloutError, match="nothing to roll back"):
        t.rollback()
    t.add("f-2")
    with pytest.raises(RolloutError, match="between 0 and 100"):
        t.rollout(101)


def test_pick_follows_the_split_within_tolerance() -> None:
    t = Traffic()
    t.add("a")
    t.add("b", 30)
    rng = random.Random(7)
    n = 20_000
    hits = sum(t.pick(rng) == "b" for _ in range(n))
    # 30% +- 4 standard deviations
    sd = (n * 0.3 * 0.7) ** 0.5
    assert abs(hits - 0.3 * n) < 4 * sd


def test_public_api_is_pinned() -> None:
    import localplatform

    assert sorted(localplatform.__all__) == [
        "Autoscaler",
        "ConcurrencyWindow",
        "Decision",
        "PlatformError",
        "PlatformRequestError",
        "Policy",
        "RolloutError",
        "Route",
        "Traffic",
        "rollout",
        "route",
        "status",
        "status_text",
    ]
    for name in localplatform.__all__:
        assert getattr(localplatform, name) is not None
