"""A stub of the few Kubernetes API endpoints mlfn's deploy code uses, on a loopback port.

It is honest in the ways the tests rely on: it records every request (method, path,
query, content type, auth header, body), serves discovery only for the API groups it is
told are installed, implements server-side apply (resourceVersion changes only when the
content does), GET of objects and label-selected lists, DELETE, and answers injected
errors with Kubernetes ``Status`` bodies.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from knative.cluster import KINDS

Obj = dict[str, Any]
ALL_GROUPS = {api for api, _ in KINDS}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    authorization: str
    body: Obj | None


def status_body(code: int, reason: str, message: str, **details: Any) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        "details": details,
    }


@dataclass
class KubeStub:
    installed: set[str] = field(default_factory=lambda: set(ALL_GROUPS))
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[str, Obj] = field(default_factory=dict)
    failures: list[tuple[str, str, int, Obj]] = field(default_factory=list)
    conditions: dict[str, Obj | None] = field(default_factory=dict)
    """name -> Ready condition to report (None: no condition at all); default Ready=True."""
    _rv: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def fail(
        self, method: str, path_prefix: str, code: int, reason: str, message: str, **details: Any
    ) -> None:
        self.failures.append(
            (method, path_prefix, code, status_body(code, reason, message, **details))
        )

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, path: Path, server: str | None = None) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "stub",
                    "clusters": [{"name": "stub", "cluster": {"server": server or self.url}}],
                    "users": [{"name": "me", "user": {"token": "stub-token"}}],
                    "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "me"}}],
                }
            )
        )
        return path

    # --- behaviour ---------------------------------------------------------------
    def _discovery(self, path: str) -> tuple[int, Obj] | None:
        gv = path.removeprefix("/apis/").removeprefix("/api/")
        if path not in (f"/apis/{gv}", f"/api/{gv}") or gv.count("/") > 1:
            return None
        if gv not in self.installed:
            return 404, status_body(
                404, "NotFound", "the server could not find the requested resource"
            )
        resources = [
            {"name": k.plural, "kind": kind, "namespaced": k.namespaced}
            for (api, kind), k in KINDS.items()
            if api == gv
        ]
        return 200, {"kind": "APIResourceList", "groupVersion": gv, "resources": resources}

    def _group_of(self, path: str) -> str:
        parts = path.split("/")
        return parts[2] if parts[1] == "api" else f"{parts[2]}/{parts[3]}"

    def _status(self, obj: Obj) -> Obj:
        name = obj["metadata"]["name"]
        cond = self.conditions.get(name, {"type": "Ready", "status": "True"})
        out: Obj = {
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [cond] if cond else [],
        }
        if obj["kind"] == "Service":
            out["url"] = f"http://{name}.{obj['metadata']['namespace']}.example.com"
            out["latestReadyRevisionName"] = obj.get("_latest", f"{name}-00001")
        return out

    def _apply(self, path: str, body: Obj, manager: str) -> tuple[int, Obj]:
        if self._group_of(path) not in self.installed:
            return 404, status_body(
                404, "NotFound", "the server could not find the requested resource"
            )
        old = self.objects.get(path)
        if manager == "mlfn" or old is None:
            new = copy.deepcopy(body)
            if old is not None:
                new["metadata"] = {**old["metadata"], **body["metadata"]}
        else:
            new = copy.deepcopy(old)
            new.setdefault("spec", {}).update(copy.deepcopy(body.get("spec", {})))
        new.pop("status", None)
        compare_old = {k: v for k, v in (old or {}).items() if k != "status"}
        if old is not None:
            compare_old["metadata"] = {
                k: v
                for k, v in old["metadata"].items()
                if k not in ("resourceVersion", "generation")
            }
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            new["metadata"]["generation"] = old["metadata"]["generation"]
        compare_new = {
            **new,
            "metadata": {
                k: v
                for k, v in new["metadata"].items()
                if k not in ("resourceVersion", "generation")
            },
        }
        if old is None or compare_old != compare_new:
            self._rv += 1
            new["metadata"]["resourceVersion"] = str(self._rv)
            new["metadata"]["generation"] = (old or {"metadata": {"generation": 0}})["metadata"][
                "generation"
            ] + 1
        new["status"] = self._status(new)
        self.objects[path] = new
        return (201 if old is None else 200), new

    def handle(self, rec: Recorded) -> tuple[int, Obj]:
        with self._lock:
            self.requests.append(rec)
            for method, prefix, code, body in self.failures:
                if method == rec.method and rec.path.startswith(prefix):
                    return code, body
            if rec.method == "GET":
                disc = self._discovery(rec.path)
                if disc is not None:
                    return disc
                if rec.path in self.objects:
                    obj = self.objects[rec.path]
                    obj["status"] = self._status(obj)
                    return 200, obj
                items = [o for p, o in self.objects.items() if p.rsplit("/", 1)[0] == rec.path]
                if items or self._is_collection(rec.path):
                    selector = dict(parse_qsl(rec.query.get("labelSelector", "").replace(",", "&")))
                    items = [
                        o
                        for o in items
                        if all(
                            o["metadata"].get("labels", {}).get(k) == v for k, v in selector.items()
                        )
                    ]
                    return 200, {"kind": "List", "items": items}
                return 404, status_body(404, "NotFound", f"{rec.path} not found")
            if rec.method == "PATCH":
                assert rec.body is not None
                return self._apply(rec.path, rec.body, rec.query.get("fieldManager", ""))
            if rec.method == "DELETE":
                if self.objects.pop(rec.path, None) is None:
                    return 404, status_body(404, "NotFound", f"{rec.path} not found")
                return 200, status_body(200, "", "deleted")
            return 405, status_body(405, "MethodNotAllowed", rec.method)

    def _is_collection(self, path: str) -> bool:
        return any(path.endswith("/" + k.plural) for k in KINDS.values())

    def add(self, obj: Obj, path: str) -> None:
        """Put an object in the store, as if someone else had created it."""
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {}).update({"resourceVersion": str(self._rv), "generation": 1})
        self.objects[path] = obj

    # --- server ------------------------------------------------------------------
    def start(self) -> KubeStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                rec = Recorded(
                    self.command,
                    parts.path,
                    dict(parse_qsl(parts.query)),
                    self.headers.get("Content-Type", ""),
                    self.headers.get("Authorization", ""),
                    json.loads(raw) if raw else None,
                )
                code, body = stub.handle(rec)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="kubestub", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


Hook = Callable[[KubeStub], None]
