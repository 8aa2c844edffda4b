"""A tiny stand-in for ``runtime.server.run``: same routes the platform uses, stdlib only.

``/healthz``, ``/readyz`` (200 after ``MLFN_TEST_LOAD_SECONDS``), ``/metrics`` (cold-start
gauges as the real server names them), ``POST /`` calls an inference function with one
request. SIGTERM stops accepting, lets requests in flight finish, exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def run(function: Any, settings: Any, port: int, host: str = "127.0.0.1") -> None:
    if os.environ.get("MLFN_TEST_FAIL_START"):
        raise RuntimeError(f"{function.name} fails to start on purpose")
    started = time.monotonic()
    load = float(os.environ.get("MLFN_TEST_LOAD_SECONDS", "0"))
    ready_at = started + load
    in_flight = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 1 << 16  # one write per response: no Nagle/delayed-ACK stalls

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, b'{"status":"ok"}')
            elif self.path == "/readyz":
                ok = time.monotonic() >= ready_at
                self._send(200 if ok else 503, b"{}")
            elif self.path == "/metrics":
                body = (
                    f'mlfn_cold_start_seconds{{function="{function.name}",phase="imports_done"}} 0.001\n'
                    f'mlfn_cold_start_seconds{{function="{function.name}",phase="model_loaded"}} {load + 0.001}\n'
                    f'mlfn_model_version{{function="{function.name}",model="m"}} 7.0\n'
                )
                self._send(200, body.encode(), "text/plain")
            else:
                self._send(404, b'{"error":"not found"}')

        def do_POST(self) -> None:
            with lock:
                in_flight[0] += 1
            try:
                length = int(self.headers.get("Content-Length", "0"))
                data = json.loads(self.rfile.read(length) or b"{}")
                req = function.request_model.model_validate(data)
                out = function.target([req])[0]
                self._send(200, out.model_dump_json().encode())
            finally:
                with lock:
                    in_flight[0] -= 1

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True

    def on_term(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    server.serve_forever(poll_interval=0.05)
    deadline = time.monotonic() + 5
    while in_flight[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    server.server_close()
