"""The loop's pipeline on loopback: ``mlfn dev`` in a subprocess, as a user runs it.

:func:`on_dev` starts it (its own embedded broker, eventing plane, gateway and instances)
serving :mod:`tests.e2e.loopfns.pipeline`, the example pipeline on a raw topic of the
test's own; :class:`Pipeline` produces records, calls ``predict`` and reads the stores,
the broker topic and the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventing import codec
from eventing._kafka import read_topic
from eventing.broker import broker_topic
from eventing.producer import EventProducer
from mlfn.settings import Settings
from runtime import events
from runtime.models.store import LocalModelStore, ModelVersion
from tests.fixtures.servers import http_call

PACKAGE = "tests.e2e.loopfns"


@dataclass
class Pipeline:
    """A running pipeline: its home, broker and ``predict`` endpoint (see :func:`on_dev`)."""

    home: Path
    bootstrap: str
    raw_topic: str
    predict_url: str
    predict_path: str = "/predict/"
    namespace: str = "default"
    producer: EventProducer | None = None

    @property
    def settings(self) -> Settings:
        return Settings().updated(
            common={"functions_package": PACKAGE, "home": self.home, "namespace": self.namespace},
            eventing={"bootstrap_servers": self.bootstrap},
        )

    @property
    def models(self) -> LocalModelStore:
        return LocalModelStore(self.settings.model_store_path)

    def produce(self, records: Iterable[Any]) -> int:
        """Send raw records (plain JSON values, or bytes as they are) to the raw topic."""
        if self.producer is None:
            self.producer = EventProducer(self.bootstrap, partitions=2)
        n = 0
        for value in records:
            if isinstance(value, bytes):
                self.producer.send_record(self.raw_topic, codec.KafkaRecord(value=value))
            else:
                self.producer.send(self.raw_topic, value)
            n += 1
        self.producer.flush()
        return n

    def predict(self, rows: list[list[float]]) -> tuple[int, list[int]]:
        """``(model_version, predictions)`` from the predict endpoint."""
        reply = http_call(self.predict_url, "POST", self.predict_path, {"instances": rows})
        assert reply.status == 200, reply.body
        body = reply.json()
        return int(body["model_version"]), list(body["predictions"])

    def versions(self) -> list[ModelVersion]:
        return self.models.versions("digits")

    def latest(self) -> int:
        return self.models.latest("digits")

    def broker_events(self) -> Iterator[events.CloudEvent]:
        for c in read_topic(self.bootstrap, broker_topic(self.namespace, "default"), limit_s=5):
            if codec.is_cloudevent_kafka(c.record.headers):
                yield codec.from_kafka(c.record)

    def dead_letters(self) -> list[tuple[dict[str, str], bytes | None]]:
        """``(headers, value)`` of each record in the dead-letter topic."""
        out = []
        for c in read_topic(self.bootstrap, f"{self.raw_topic}.dlq", limit_s=5):
            headers = {k: v.decode("utf-8", "replace") for k, v in c.record.headers}
            out.append((headers, c.record.value))
        return out


def digits_rows(start: int, stop: int) -> list[dict[str, Any]]:
    """Raw records of the bundled digits (pixels 0..16 and the label)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return [
        {"pixels": [int(v) for v in d.data[i]], "label": int(d.target[i])}
        for i in range(start, stop)
    ]


@contextmanager
def on_dev(tmp_path: Path, raw_topic: str) -> Iterator[Pipeline]:
    """``mlfn dev`` serving the test pipeline (with its embedded broker)."""
    import json

    from tests.fixtures.platform import start_platform

    settings = {
        "MLFN_FUNCTIONS_PACKAGE": PACKAGE,
        "MLFN_PLATFORM_SERVER": "localplatform.instance:run",
        "MLFN_PLATFORM_PRELOAD": "flask,numpy,sklearn,skops.io,gevent,gunicorn.workers.ggevent",
        "MLFN_PLATFORM_EVENTING": "true",
        "MLFN_PLATFORM_WATCH_SECONDS": "0",
        "MLFN_PLATFORM_STABLE_WINDOW_SECONDS": "60",
        "MLFN_E2E_RAW_TOPIC": raw_topic,
        "MLFN_LOG_FORMAT": "json",
    }
    with start_platform(tmp_path, **settings) as platform:
        run = json.loads((platform.home / "platform" / "dev.json").read_text())
        pipeline = Pipeline(platform.home, run["bootstrap"], raw_topic, platform.url)
        try:
            yield pipeline
        finally:
            if pipeline.producer is not None:
                pipeline.producer.close()
