"""`mlfn broker`, `mlfn produce`, `mlfn dispatch` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventing import codec
from eventing._kafka import read_topic
from mlfn.cli import root
from runtime import events
from tests.eventing.conftest import read_until
from tests.eventing.sink import Sink

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
MLFN = [sys.executable, "-c", "from mlfn.cli import main; main()"]


def test_broker_command_prints_address_and_stops_on_sigterm() -> None:
    p = subprocess.Popen(
        [*MLFN, "broker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("bootstrap: 127.0.0.1:")
        bootstrap = line.split()[1]
        assert read_topic(bootstrap, "nothing-here") == []  # it speaks Kafka
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        for f in (p.stdout, p.stderr):
            if f:
                f.close()


def test_produce_digits_dataset(bootstrap: str, unique_topic: Callable[[str], str]) -> None:
    topic = unique_topic("digits")
    r = CliRunner().invoke(
        root,
        [
            "produce",
            "--topic",
            topic,
            "--dataset",
            "digits",
            "--count",
            "30",
            "--bootstrap",
            bootstrap,
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"sent 30 records to {topic}" in r.output
    recs = read_until(bootstrap, topic, 30)
    values = [json.loads(c.record.value or b"") for c in recs]
    assert all(len(v["pixels"]) == 64 and 0 <= v["label"] <= 9 for v in values)
    assert ("content-type", b"application/json") in recs[0].record.headers


@pytest.mark.parametrize("fmt", ["binary", "structured"])
def test_produce_json_lines_as_cloudevents(
    bootstrap: str, unique_topic: Callable[[str], str], fmt: str
) -> None:
    topic = unique_topic("ce")
    r = CliRunner().invoke(
        root,
        [
            "produce",
            "--topic",
            topic,
            "--format",
            fmt,
            "--type",
            "demo.x",
            "--key-field",
            "user",
            "--bootstrap",
            bootstrap,
        ],
        input='{"user": "a", "x": 1}\n\n{"user": "b", "x": 2}\n',
    )
    assert r.exit_code == 0, r.output
    recs = read_until(bootstrap, topic, 2)
    got = sorted((codec.from_kafka(c.record) for c in recs), key=lambda e: e["partitionkey"])
    assert [e["type"] for e in got] == ["demo.x", "demo.x"]
    assert [events.event_data(e)["x"] for e in got] == [1, 2]
    assert [c.record.key for c in sorted(recs, key=lambda c: c.record.key or b"")] == [b"a", b"b"]


def test_produce_errors_are_clear(bootstrap: str) -> None:
    r = CliRunner().invoke(
        root, ["produce", "--topic", "x", "--bootstrap", bootstrap], input='{"a": 1}\nnope\n'
    )
    assert r.exit_code == 1 and "stdin line 2 is not valid JSON" in r.output
    r = CliRunner().invoke(root, ["produce", "--topic", "x"], env={"MLFN_BOOTSTRAP_SERVERS": ""})
    assert r.exit_code == 2 and "mlfn broker" in r.output
    r = CliRunner().invoke(
        root, ["dispatch", "--topic", "x", "--sink", "ftp://x", "--bootstrap", bootstrap]
    )
    assert r.exit_code == 2 and "not an http(s) URL" in r.output
    r = CliRunner().invoke(
        root,
        [
            "dispatch",
            "--topic",
            "x",
            "--sink",
            "http://x/",
            "--backoff-delay",
            "soon",
            "--bootstrap",
            bootstrap,
        ],
    )
    assert r.exit_code == 2 and "invalid delivery option" in r.output


def test_dispatch_command_runs_until_sigterm(
    bootstrap: str, unique_topic: Callable[[str], str], make_sink: Callable[..., Sink]
) -> None:
    topic = unique_topic("cli")
    sink = make_sink()
    r = CliRunner().invoke(
        root, ["produce", "--topic", topic, "--bootstrap", bootstrap], input='{"n": 1}\n'
    )
    assert r.exit_code == 0, r.output
    p = subprocess.Popen(
        [*MLFN, "dispatch", "--topic", topic, "--sink", sink.url, "--bootstrap", bootstrap],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "MLFN_LOG_LEVEL": "WARNING"},
    )
    try:
        assert sink.wait_for(lambda e: len(e) == 1, 30)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert "delivered=1" in err
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=5)
    assert sink.events[0]["attrs"]["type"] == "dev.knative.kafka.event"
