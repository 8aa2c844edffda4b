"""At-least-once across a sink crash: SIGKILL the sink mid-stream, restart it, lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from eventing.broker import free_port
from eventing.dispatcher import Dispatcher, DispatcherConfig
from eventing.producer import EventProducer
from runtime.spec import Delivery
from tests.eventing.conftest import wait_until

pytestmark = pytest.mark.integration

N = 5000
SINK = Path(__file__).with_name("sink.py")
REPO = Path(__file__).resolve().parents[2]


def _lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


@pytest.fixture
def sink_process(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    port = free_port()
    out = tmp_path / "events.jsonl"
    procs: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, str(SINK), "--port", str(port), "--out", str(out)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    start.port = port  # type: ignore[attr-defined]
    start.out = out  # type: ignore[attr-defined]
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)
        if p.stdout:
            p.stdout.close()


def test_sigkill_sink_mid_stream_loses_nothing(
    bootstrap: str,
    unique_topic: Callable[[str], str],
    run_dispatcher: Callable[[DispatcherConfig], Dispatcher],
    sink_process: Callable[[], subprocess.Popen[str]],
    record_property: Callable[[str, object], None],
) -> None:
    topic = unique_topic("crash")
    out: Path = sink_process.out  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{sink_process.port}/"  # type: ignore[attr-defined]
    with EventProducer(bootstrap) as p:
        p.stream(topic, ({"n": i} for i in range(N)), key_of=lambda v: str(v["n"] % 16))
    proc = sink_process()
    delivery = Delivery(
        retry=10, backoff_policy="exponential", backoff_delay=timedelta(milliseconds=50)
    )
    d = run_dispatcher(
        DispatcherConfig("crash", (topic,), unique_topic("g"), url, delivery=delivery)
    )

    wait_until(lambda: len(_lines(out)) >= N // 3, 30, f"{N // 3} events before the kill")
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    seen_at_kill = len(_lines(out))
    assert seen_at_kill < N, "the stream finished before the kill: raise N"
    sink_process()  # same port, same output file

    def all_seen() -> bool:
        return len({e["data"] for e in _lines(out)}) >= N

    wait_until(all_seen, 60, f"all {N} events delivered after the restart")
    got = Counter(json.loads(str(e["data"]))["n"] for e in _lines(out))
    assert set(got) == set(range(N)), "lost events"
    duplicates = sum(c - 1 for c in got.values())
    record_property("duplicates", duplicates)
    print(f"\nSIGKILL at {seen_at_kill}/{N} events: {duplicates} duplicate deliveries, 0 lost")
    s = d.stats.snapshot().counters
    assert s["dead_lettered"] == 0 and s["dropped"] == 0
    assert s["retried"] > 0  # the dispatcher did see the sink down
