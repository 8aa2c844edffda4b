"""A cluster rehearsal on loopback: the rendered manifests, run as local processes.

:func:`pod` turns a rendered Knative Service into what the kubelet would run: the
container's command and arguments with its rendered environment only (a ``secretKeyRef``
resolved from the given secrets, as the kubelet does), ``/tmp`` (``MLFN_HOME``) a fresh
directory per pod (an emptyDir), the port Knative would set. :class:`ServiceProxy`
stands in for a Knative Service with several pods: it spreads requests over the live
replicas and, like the activator, holds a request while no replica answers.
mlfn's own dispatchers (:class:`eventing.plane.EventingPlane`) stand in for Knative's
Kafka source and broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import urllib3

from tests.fixtures.servers import ServerProcess, _free_port, wait_for_server

REPO = Path(__file__).resolve().parents[2]
_MLFN = "from mlfn.cli import main; main()"


def pod_env(
    service: dict[str, Any], secrets: dict[tuple[str, str], str], **overrides: str
) -> dict[str, str]:
    """The container's environment as the kubelet builds it, plus ``overrides``."""
    container = service["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[(ref["name"], ref["key"])]  # KeyError: missing Secret
    return {**env, **overrides}


@dataclass
class Pod:
    """One running replica of a rendered Service."""

    name: str
    server: ServerProcess
    home: Path

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self) -> None:
        """SIGKILL: no drain, no clean-up, as a node failure."""
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait(10)

    def stop(self) -> None:
        if self.server.proc.poll() is None:
            self.server.proc.kill()
            self.server.proc.wait(10)


def pod(
    service: dict[str, Any],
    secrets: dict[tuple[str, str], str],
    root: Path,
    *,
    overrides: dict[str, str],
    wait_healthy: bool = False,
) -> Pod:
    """Start one replica of ``service`` (a rendered Knative Service) as a local process."""
    container = service["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["mlfn"], container["command"]
    args = list(container["args"])
    args[args.index("--host") + 1] = "127.0.0.1"  # loopback only, not 0.0.0.0
    port = _free_port()
    home = Path(tempfile.mkdtemp(prefix=f"{service['metadata']['name']}-", dir=root))
    env = pod_env(service, secrets, **overrides)
    env["MLFN_HOME"] = str(home)  # the pod's own /tmp emptyDir
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "PORT": str(port)}
    log_path = home / "pod.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _MLFN, *args],
            cwd=REPO,
            env={**base, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path, service["metadata"]["name"])
    out = Pod(service["metadata"]["name"], server, home)
    if wait_healthy:
        wait_healthy_pod(out)
    return out


def wait_healthy_pod(p: Pod, timeout: float = 60.0) -> None:
    def healthy() -> bool:
        if p.server.proc.poll() is not None:
            raise RuntimeError(f"{p.name} exited: {p.server.log_path.read_text()[-3000:]}")
        return p.server.call(path="/healthz", timeout=2).status == 200

    wait_for_server(healthy, timeout, f"{p.name} to answer /healthz")


@dataclass
class ServiceProxy:
    """A Knative Service in front of replicas: round robin over those that answer.

    A request that finds no replica answering waits, as the activator does, up to
    ``hold_s``; one whose replica dies mid-request is answered 502 (the sender retries).
    """

    backends: list[str] = field(default_factory=list)
    hold_s: float = 30.0
    served: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pool = urllib3.PoolManager(maxsize=32, retries=False)
        self._next = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                status, rh, rbody = proxy.forward(self.path, headers, body)
                self.send_response(status)
                for k, v in rh.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(rbody)))
                self.end_headers()
                self.wfile.write(rbody)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _pick(self) -> str | None:
        with self._lock:
            if not self.backends:
                return None
            self._next = (self._next + 1) % len(self.backends)
            return self.backends[self._next]

    def forward(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        deadline = time.monotonic() + self.hold_s
        while True:
            backend = self._pick()
            if backend is not None:
                try:
                    r = self._pool.request(
                        "POST", backend + path, body=body, headers=headers, timeout=120
                    )
                except urllib3.exceptions.ProtocolError:  # the replica died mid-request
                    return 502, {}, b"replica died mid-request"
                except urllib3.exceptions.HTTPError:  # not listening: try another one
                    pass
                else:
                    with self._lock:
                        self.served[backend] = self.served.get(backend, 0) + 1
                    return r.status, dict(r.headers), r.data or b""
            if time.monotonic() > deadline:
                return 503, {}, b"no replica answered"
            time.sleep(0.05)  # an activator's hold: wait for a replica to come up

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._pool.clear()
