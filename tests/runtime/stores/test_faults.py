"""A database that goes away: readiness says why (503, no traceback), and serving recovers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlfn.settings import Settings
from runtime.registry import discover
from runtime.server.app import Request, create_app
from runtime.stores import close_all
from tests.fixtures.postgres import PostgresServer, running_postgres
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of the test's own: it is stopped and started again."""
    with running_postgres() as server:
        yield server
    close_all()


def _ready(app: object) -> tuple[int, dict[str, str]]:
    resp = app.handle(Request("GET", "/readyz", {}))  # type: ignore[attr-defined]
    return resp.status, json.loads(resp.body)


def test_inference_waits_for_the_database_then_serves(
    own_server: PostgresServer, tmp_path: Path
) -> None:
    url = own_server.create_database()
    own_server.stop()
    settings = Settings().updated(common={"home": tmp_path}, models={"database_url": url})
    fn = discover("tests.localplatform.modelfns").get("boot")
    app = create_app(fn, settings)
    try:
        status, body = wait_for(
            lambda: (r := _ready(app))[1].get("reason", "").startswith("waiting") and r,
            20,
            "readiness to name the unreachable database",
        )
        assert status == 503 and "is unreachable" in body["reason"]
        assert "Traceback" not in body["reason"] and app.load_error is None
        own_server.start()
        wait_for(lambda: _ready(app)[0] == 200, 30, "recovery once the database is back")
        reply = app.handle(
            Request("POST", "/", {"content-type": "application/json"}, b'{"x": 1.0}')
        )
        assert reply.status == 200 and reply.json() == {"label": 5, "model_version": 1}
    finally:
        app.close()


def test_retrain_readiness_and_events_say_the_database_is_down(
    own_server: PostgresServer, tmp_path: Path
) -> None:
    url = own_server.create_database()
    settings = Settings().updated(
        common={"home": tmp_path, "functions_package": "functions"}, models={"database_url": url}
    )
    fn = discover("functions").get("retrain")
    app = create_app(fn, settings)
    try:
        assert app.wait_ready(30) and _ready(app)[0] == 200
        own_server.stop()
        _status, body = wait_for(
            lambda: (r := _ready(app))[0] == 503 and r, 10, "readiness 503 while it is down"
        )
        assert "is unreachable" in body["reason"]
        event = Request(
            "POST",
            "/",
            {
                "ce-specversion": "1.0",
                "ce-id": "ev-1",
                "ce-source": "/test",
                "ce-type": "mlfn.digits.features",
                "content-type": "application/json",
            },
            json.dumps({"features": [0.0] * 64, "label": 3}).encode(),
        )
        reply = app.handle(event)  # the dispatcher retries a 503: nothing is lost
        assert reply.status == 503 and "is unreachable" in reply.json()["error"]["message"]
        own_server.start()
        wait_for(lambda: _ready(app)[0] == 200, 30, "readiness once the database is back")
        assert app.handle(event).status in (200, 204)
        assert app.handle(event).status in (200, 204)  # a duplicate event adds no row
        from runtime.stores import open_stores

        assert open_stores(settings).datasets.open("digits").count() == 1
    finally:
        app.close()
        from runtime.retraining import close_loops

        close_loops()
