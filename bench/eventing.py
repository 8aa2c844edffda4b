"""Events/s from Kafka to a no-op event function: ordered/unordered, per-event/batched.

Beside them, the rate at which a bare kafka-python consumer reads the same topic: the
limit that a dispatcher cannot beat. One run on the embedded broker; the sink is a lean
no-op HTTP/1.1 server in its own process (answers 200 to every POST).

    python -m bench eventing
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N = 10_000
REPO = Path(__file__).resolve().parent.parent


async def _serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


_NOOP_FN = """
from runtime import event


@event(name="noop", reply_to_broker=None)
def noop(ev):
    return None
"""


def _start_serve(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``mlfn serve`` running a no-op event function, in its own process."""
    import os
    import urllib.request

    from eventing.broker import free_port

    pkg = tmp / "benchfns"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "noop.py").write_text(_NOOP_FN)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp}{os.pathsep}{REPO}",
        "MLFN_FUNCTIONS_PACKAGE": "benchfns",
        "MLFN_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from mlfn.cli import main; main()",
            "serve",
            "noop",
            "--port",
            str(port),
        ],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("mlfn serve did not become ready in 30s")


def _bare_consumer(bootstrap: str, topic: str) -> float:
    from eventing._kafka import read_topic

    t0 = time.perf_counter()
    n = len(read_topic(bootstrap, topic, quiet_s=0.05))
    return n / (time.perf_counter() - t0 - 0.05)


def _dispatch(bootstrap: str, topic: str, sink: str, ordering: str, batch: int | None) -> float:
    from eventing.dispatcher import Dispatcher, DispatcherConfig
    from runtime.spec import EventBatch

    group = f"bench-{ordering}-{batch}-{time.time_ns()}"
    cfg = DispatcherConfig(
        "bench",
        (topic,),
        group,
        sink,
        ordering=ordering,  # type: ignore[arg-type]
        batch=EventBatch(max_events=batch, max_wait_ms=10) if batch else None,
        durable_retries=False,
    )
    d = Dispatcher(cfg, bootstrap).start()
    try:
        if not d.wait_assigned(30):
            raise RuntimeError("no partitions assigned in 30s")
        t0 = time.perf_counter()
        deadline = t0 + 120
        while d.stats.snapshot().counters["delivered"] < N and time.perf_counter() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        return d.stats.snapshot().counters["delivered"] / elapsed
    finally:
        d.stop()


def main() -> None:
    from eventing.broker import EmbeddedBroker, free_port
    from eventing.producer import EventProducer

    port = free_port()
    sink = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import asyncio, bench.eventing as b; asyncio.run(b._serve({port}))",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        url = f"http://127.0.0.1:{port}/"
        with EmbeddedBroker() as broker:
            topic = "bench.events"
            with EventProducer(broker.bootstrap, partitions=4) as p:
                p.stream(
                    topic,
                    ({"pixels": [0] * 64, "label": i % 10} for i in range(N)),
                    key_of=lambda v: str(v["label"]),
                )
            rows = [
                ("bare kafka-python consumer (the limit)", _bare_consumer(broker.bootstrap, topic))
            ]
            for ordering in ("ordered", "unordered"):
                rows.append(
                    (
                        f"dispatch {ordering}, per event",
                        _dispatch(broker.bootstrap, topic, url, ordering, None),
                    )
                )
            for ordering in ("ordered", "unordered"):
                rows.append(
                    (
                        f"dispatch {ordering}, batches of 100",
                        _dispatch(broker.bootstrap, topic, url, ordering, 100),
                    )
                )
            with tempfile.TemporaryDirectory() as tmp:
                serve, serve_url = _start_serve(Path(tmp))
                try:
                    for batch in (None, 100):
                        what = "per event" if batch is None else f"batches of {batch}"
                        rate = _dispatch(broker.bootstrap, topic, serve_url, "unordered", batch)
                        rows.append((f"mlfn serve no-op fn, unordered, {what}", rate))
                finally:
                    serve.terminate()
                    serve.wait(30)
    finally:
        sink.kill()
        sink.wait(5)
        if sink.stdout:
            sink.stdout.close()
    print(f"{N} events, 4 partitions; no-op sink: a lean asyncio server, or `mlfn serve`")
    print(f"{'path':48} {'events/s':>10}")
    for name, rate in rows:
        print(f"{name:48} {rate:>10,.0f}")


if __name__ == "__main__":
    main()
