"""Announcements reach the broker: Kafka topic, HTTP ingress, or the ``mlfn dev`` run file."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from eventing._kafka import read_topic
from eventing.broker import broker_topic
from eventing.codec import from_kafka
from eventing.sinks import KafkaEmitter, emitters_for
from mlfn.settings import Settings
from runtime.events import new_event
from runtime.retraining.emit import EmitError, HttpEmitter, default_emitters


def published(version: int) -> object:
    return new_event("mlfn.model.published", "/t", {"version": version}, subject="digits")


@pytest.mark.integration
def test_kafka_emitter_puts_binary_events_on_the_broker_topic(bootstrap: str) -> None:
    topic = broker_topic("emit-test", "default")
    emit = KafkaEmitter(bootstrap, topic, partitions=1)
    try:
        emit(published(7))
    finally:
        emit.close()
    [record] = read_topic(bootstrap, topic)
    ev = from_kafka(record.record)
    assert (ev["type"], ev["subject"], ev.get_data()["version"]) == (
        "mlfn.model.published",
        "digits",
        7,
    )


@pytest.mark.integration
def test_run_file_fallback_finds_the_dev_broker_at_the_first_announcement(
    tmp_path: Path, bootstrap: str
) -> None:
    settings = Settings().updated(common={"home": tmp_path, "namespace": "emit-lazy"})
    emit = emitters_for(settings)("default")
    emit(published(1))  # no run file yet: logged only, no error
    (tmp_path / "platform").mkdir()
    (tmp_path / "platform" / "dev.json").write_text(json.dumps({"bootstrap": bootstrap}))
    emit(published(2))
    emit.close()  # type: ignore[attr-defined]
    versions = [
        from_kafka(c.record).get_data()["version"]
        for c in read_topic(bootstrap, broker_topic("emit-lazy", "default"))
    ]
    assert versions == [2]


class _Ingress(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    status = 202

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"no")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ingress() -> Iterator[tuple[str, type[_Ingress]]]:
    handler = type("Ingress", (_Ingress,), {"received": [], "status": 202})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/default/default", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_http_emitter_posts_binary_mode_to_the_broker_ingress(
    ingress: tuple[str, type[_Ingress]],
) -> None:
    url, handler = ingress
    settings = Settings().updated(loop={"broker_url": url})
    emit = emitters_for(settings)("default")
    assert isinstance(emit, HttpEmitter)
    assert isinstance(default_emitters(settings)("default"), HttpEmitter)
    emit(published(3))
    [(headers, body)] = handler.received
    assert headers["ce-type"] == "mlfn.model.published"
    assert headers["ce-subject"] == "digits"
    assert json.loads(body) == {"version": 3}
    handler.status = 500
    with pytest.raises(EmitError, match="answered 500"):
        emit(published(4))
    emit.close()


@pytest.mark.unit
def test_no_broker_named_means_log_only(caplog: pytest.LogCaptureFixture) -> None:
    emit = emitters_for(Settings())(None)
    emit(published(1))
    assert "only logged" in caplog.text
