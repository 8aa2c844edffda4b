"""The canary controller driving a Knative Service: status.traffic in, traffic block out.

The cluster is a stub standing in for the Kubernetes API (``get``/``list``/``apply``, the
three calls the reader and :mod:`knative.rollout` make); it records what it was sent. The
tagged revisions' ``/metrics`` are real HTTP pages on loopback, rendered by the server's
own metrics class.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from localplatform.canary import CanaryDriver
from localplatform.canary_io import KnativeTarget, knative_reader, knative_splits
from runtime.server.metrics import Metrics
from runtime.spec import Rollout

pytestmark = pytest.mark.integration


class StubCluster:
    def __init__(self, traffic: list[dict[str, Any]]) -> None:
        self.traffic = traffic
        self.applied: list[dict[str, Any]] = []

    def get(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        if obj["metadata"]["name"] != "predict":
            return None
        return {
            "metadata": {"name": "predict"},
            "status": {"latestReadyRevisionName": "predict-00002", "traffic": self.traffic},
        }

    def list(self, api_version: str, kind: str, namespace: str, selector: str = "") -> list[Any]:
        ready = [{"type": "Ready", "status": "True"}]
        return [
            {
                "metadata": {
                    "name": f"predict-0000{g}",
                    "labels": {"serving.knative.dev/configurationGeneration": str(g)},
                },
                "status": {"conditions": ready},
            }
            for g in (1, 2)
        ]

    def apply(self, obj: dict[str, Any], *, field_manager: str = "") -> dict[str, Any]:
        self.applied.append({"obj": obj, "field_manager": field_manager})
        return obj


@pytest.fixture
def pages() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback server answering ``/<revision>/metrics`` from a dict of pages."""
    content: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = content.get(self.path.split("/")[1], b"")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", content
    finally:
        server.shutdown()
        server.server_close()


def page(ok: int, failed: int) -> bytes:
    m = Metrics("predict")
    for _ in range(ok):
        m.observe(200, 0.01)
    for _ in range(failed):
        m.observe(500, 0.01)
    return m.render()


@pytest.mark.parametrize(("failed", "action", "winner"), [(0, "promote", 2), (5, "rollback", 1)])
def test_a_knative_canary_is_promoted_or_rolled_back_from_its_tag_urls(
    pages: tuple[str, dict[str, bytes]], failed: int, action: str, winner: int
) -> None:
    base, content = pages
    cluster = StubCluster(
        [
            {"revisionName": "predict-00002", "percent": 20, "tag": "candidate",
             "url": f"{base}/predict-00002"},
            {"revisionName": "predict-00001", "percent": 80, "tag": "current",
             "url": f"{base}/predict-00001"},
        ]
    )  # fmt: skip
    content["predict-00001"] = page(100, 0)
    content["predict-00002"] = page(0, 0)
    rollout = Rollout(strategy="canary", window_seconds=5, min_requests=20, max_error_rate=0.01)
    now = [0.0]
    driver = CanaryDriver(
        knative_reader(cluster, "ml"),  # type: ignore[arg-type]
        KnativeTarget(cluster, "ml"),  # type: ignore[arg-type]
        clock=lambda: now[0],
        find=knative_splits(cluster, "ml", {"predict": rollout}),  # type: ignore[arg-type]
    )
    assert driver.tick() == [] and driver.active == ["predict"]
    content["predict-00001"] = page(180, 0)
    content["predict-00002"] = page(25 - failed, failed)
    now[0] = 6.0
    [(fn, decision)] = driver.tick()
    assert (fn, decision.action) == ("predict", action)
    [applied] = cluster.applied
    assert applied["field_manager"] == "mlfn-rollout"
    assert applied["obj"]["spec"]["traffic"] == [
        {"revisionName": f"predict-0000{winner}", "percent": 100, "tag": "current"}
    ]
