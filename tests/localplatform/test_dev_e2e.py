"""`mlfn dev` with the example functions, the real server and the eventing plane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.platform import Platform, start_platform, wait_for

pytestmark = pytest.mark.e2e


def _dispatcher(platform: Platform, name: str) -> dict[str, Any]:
    eventing = platform.status()["eventing"]
    found: dict[str, Any] = next(d for d in eventing["dispatchers"] if d["name"] == name)
    return found


def test_example_pipeline_http_and_events_wake_functions_from_zero(
    tmp_path: Path, broker: str
) -> None:
    from eventing.producer import EventProducer, digits_records
    from functions._digits import digits

    with start_platform(
        tmp_path,
        MLFN_FUNCTIONS_PACKAGE="functions",
        MLFN_PLATFORM_PRELOAD="flask,numpy,sklearn,skops.io,gevent,gunicorn.workers.ggevent",
        MLFN_PLATFORM_EVENTING="true",
        MLFN_BOOTSTRAP_SERVERS=broker,
        MLFN_NAMESPACE="lp-e2e",
    ) as platform:
        from eventing.cli import running_broker

        assert running_broker(platform.settings().common.home) == broker
        X, _ = digits()
        answer = platform.call("predict", {"instances": [[float(v) for v in X[0]]]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] >= 1
        wait_for(lambda: platform.live_instances("preprocess") == 0, 30, "preprocess at zero")
        with EventProducer(broker) as producer:
            producer.stream("digits.raw", digits_records(5))
        wait_for(
            lambda: _dispatcher(platform, "preprocess")["delivered"] >= 5,
            60,
            "5 events delivered to preprocess through the gateway",
        )
        reasons = [d["reason"] for d in platform.revisions("preprocess")[0]["decisions"]]
        assert "request at zero" in reasons, reasons
