"""A small CloudEvents sink for the eventing tests: in a thread, or as its own process.

It records every event it receives (binary mode, or each event of a batch) and answers
with a status chosen per event by a ``respond`` callable. As a script (the SIGKILL
test) it appends one JSON line per event to ``--out`` before answering, so what the
process saw survives its death.

    python tests/eventing/sink.py --port 8080 --out events.jsonl
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Respond = Callable[[dict[str, Any]], tuple[int, dict[str, str], bytes]]


def ok(_: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, b""


def decode(headers: dict[str, str], body: bytes) -> list[dict[str, Any]]:
    """Events in a request, as ``{"attrs": {...}, "data": str}`` dicts."""
    ctype = headers.get("content-type", "")
    if ctype.startswith("application/cloudevents-batch+json"):
        out = []
        for item in json.loads(body):
            data = item.pop("data", None)
            if "data_base64" in item:
                data = base64.b64decode(item.pop("data_base64")).decode("utf-8", "replace")
            out.append({"attrs": item, "data": data if isinstance(data, str) else json.dumps(data)})
        return out
    attrs = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
    if "content-type" in headers:
        attrs["datacontenttype"] = headers["content-type"]
    return [{"attrs": attrs, "data": body.decode("utf-8", "replace")}]


class Sink:
    """An HTTP sink on a loopback port; ``events`` holds what it received, in order."""

    def __init__(self, respond: Respond = ok, port: int = 0, out: str | None = None) -> None:
        self.respond = respond
        self.events: list[dict[str, Any]] = []
        self.requests = 0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if out else None
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                headers = {k.lower(): v for k, v in self.headers.items()}
                events = decode(headers, body)
                status, rh, rbody = 200, {}, b""
                for ev in events:
                    status, rh, rbody = sink.respond(ev)
                    if status >= 300:
                        break
                with sink.cond:
                    sink.requests += 1
                    for ev in events:
                        ev["status"] = status
                        sink.events.append(ev)
                    if sink._fd is not None:
                        lines = "".join(json.dumps(ev) + "\n" for ev in events)
                        os.write(sink._fd, lines.encode())
                    sink.cond.notify_all()
                self.send_response(status)
                for k, v in rh.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(rbody)))
                self.end_headers()
                self.wfile.write(rbody)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread: threading.Thread | None = None

    def start(self) -> Sink:
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        if self._fd is not None:
            os.close(self._fd)

    def wait_for(self, pred: Callable[[list[dict[str, Any]]], bool], timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.events), timeout_s)

    def ok_events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["status"] < 300]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sink = Sink(port=args.port, out=args.out)
    print("ready", flush=True)
    sink.server.serve_forever(0.05)


if __name__ == "__main__":
    main()
