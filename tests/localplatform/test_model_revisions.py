"""A new model version: hot-swapped in the running instances (``replace``), or a new revision
with a canary share that the canary controller promotes or rolls back (``canary``).
Real ``mlfn dev``, real server."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from sklearn.dummy import DummyClassifier

from localplatform.control import format_status
from runtime.models import LocalModelStore
from tests.fixtures.platform import Platform, start_platform, wait_for

pytestmark = pytest.mark.integration


GOOD = {"accuracy": 0.95}
"""Holdout figures above the canary function's min_model_quality (0.8)."""


def _const(label: int) -> DummyClassifier:
    return DummyClassifier(strategy="constant", constant=label).fit(np.zeros((2, 3)), [label, 9])


@pytest.fixture(scope="module")
def model_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("models")
    store = LocalModelStore(tmp / "home" / "models")
    for model in ("swap-m", "canary-m"):
        store.publish(model, _const(1), metrics=GOOD)
    with start_platform(
        tmp,
        MLFN_FUNCTIONS_PACKAGE="tests.localplatform.modelfns",
        MLFN_PLATFORM_PRELOAD="flask,numpy,sklearn,skops.io,gevent,gunicorn.workers.ggevent",
        MLFN_LOOP_CANARY_TICK_SECONDS="0.2",
        MLFN_LOOP_CANARY_INTERVAL_SECONDS="10",
    ) as platform:
        yield platform


def _canary_log(platform: Platform) -> str:
    return "\n".join(line for line in platform.output().splitlines() if "canary of" in line)


def _store(platform: Platform) -> LocalModelStore:
    return LocalModelStore(platform.home / "models")


def _traffic(platform: Platform, function: str) -> dict[str, int]:
    traffic: dict[str, int] = platform.status()["functions"][function]["traffic"]
    return {name: p for name, p in traffic.items() if p}


def _versions(s: requests.Session, platform: Platform, function: str, n: int) -> Counter[Any]:
    got: Counter[Any] = Counter()
    for _ in range(n):
        r = s.post(f"{platform.url}/{function}/", json={"x": 0.0}, timeout=10)
        got[r.json()["model_version"] if r.status_code == 200 else r.status_code] += 1
    return got


def test_replace_hot_swaps_a_new_version_in_the_running_instances(
    model_platform: Platform,
) -> None:
    p = model_platform
    with requests.Session() as s:
        assert _versions(s, p, "swap", 3) == {1: 3}
        [rev] = p.revisions("swap")
        before = {i["id"] for i in rev["instances"]}
        _store(p).publish("swap-m", _const(2))
        wait_for(lambda: _versions(s, p, "swap", 1) == {2: 1}, 15, "responses from v2")
        assert _versions(s, p, "swap", 20) == {2: 20}
    [rev] = p.revisions("swap")  # no new revision, no new instance: swapped in place
    assert {i["id"] for i in rev["instances"]} == before
    assert rev["model"] is None, "replace revisions follow latest"
    assert "swap hot-swaps it in place" in p.output()
    wait_for(lambda: "model v2" in format_status(p.status()), 10, "status to show model v2")


def test_canary_splits_versions_then_promotes_and_a_broken_version_is_rolled_back(
    model_platform: Platform,
) -> None:
    p = model_platform
    store = _store(p)
    with requests.Session() as s:
        assert _versions(s, p, "canary", 3) == {1: 3}
        store.publish("canary-m", _const(2), metrics=GOOD)
        wait_for(
            lambda: _traffic(p, "canary") == {"canary-00002": 30, "canary-00001": 70},
            15,
            "the canary revision at 30%",
        )
        # 30%, then 60% after the first passing check, then promoted at the second
        n = 60
        got = _versions(s, p, "canary", n)
        assert 0 < _traffic(p, "canary").get("canary-00002", 0) < 100, (
            "judged before the split was seen: " + _canary_log(p)
        )
        assert set(got) == {1, 2}, got
        sd = (n * 0.6 * 0.4) ** 0.5
        assert 0.3 * n - 4 * sd < got[2] < 0.6 * n + 4 * sd, got
        # judged under live traffic: a revision at zero has no instance counters to read
        wait_for(
            lambda: _versions(s, p, "canary", 5) and _traffic(p, "canary") == {"canary-00002": 100},
            45,
            "the promotion",
        )
        assert _versions(s, p, "canary", 10) == {2: 10}

        store.publish("canary-m", _const(3), metrics=GOOD, extra={"broken": True})
        wait_for(
            lambda: _traffic(p, "canary") == {"canary-00003": 30, "canary-00002": 70},
            15,
            "the broken canary at 30%",
        )
        wait_for(
            lambda: _versions(s, p, "canary", 5) and _traffic(p, "canary") == {"canary-00002": 100},
            60,
            "the broken canary to be rolled back",
        )
        assert store.latest("canary-m") == 2, "latest must name the version that serves"
        assert "pointing latest back at v2" in p.output()
        assert _versions(s, p, "canary", 10) == {2: 10}
        # a version that answers without errors but scored too low on its holdout
        store.publish("canary-m", _const(4), metrics={"accuracy": 0.3})
        wait_for(
            lambda: _traffic(p, "canary") == {"canary-00004": 30, "canary-00002": 70},
            15,
            "the low-quality canary at 30%",
        )
        wait_for(
            lambda: _versions(s, p, "canary", 5) and _traffic(p, "canary") == {"canary-00002": 100},
            60,
            "the low-quality canary to be rolled back on model quality",
        )
        assert set(_versions(s, p, "canary", 10)) == {2}
        assert "model-quality accuracy 0.3 < 0.8" in p.output()
    assert len(p.revisions("canary")) == 4, "moving latest back makes no revision"


def test_a_bootstrapped_first_version_pins_the_first_revision(model_platform: Platform) -> None:
    p = model_platform
    # on a busy machine the first instance may scale to zero before it bootstraps: wake it
    wait_for(
        lambda: p.call("boot", {"x": 0.0}).status_code == 200,
        60,
        "boot to answer",
        ignore=(requests.RequestException,),
    )
    wait_for(lambda: p.revisions("boot")[0]["model"] == 1, 45, "boot-00001 pinned to v1")
    assert "boot-00001 pinned to model v1" in p.output()
    assert p.call("boot", {"x": 0.0}).json() == {"label": 5, "model_version": 1}
    [rev] = p.revisions("boot")
    assert "boot-00001-1" not in [i["id"] for i in rev["instances"]], (
        "the instance that bootstrapped (unpinned) is replaced by pinned ones"
    )
    # a pinned instance came up (on a busy machine one may have come and gone before it)
    assert re.search(r"boot-00001-([2-9]|\d{2,}) ready in", p.output())
