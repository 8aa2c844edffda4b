"""The gateway: one port that routes to functions, holds requests at zero, and measures.

Every request passes here, so the gateway is where per-revision concurrency is measured
(what the KPA scales on) and where the activator holds requests for a revision that has
no instance with room. Status codes decided here:

- 404: no function matches the Host header or the first path segment;
- 502: the instance died or closed the connection mid-request (or keeps failing to start);
- 504: no answer within the function's ``timeout_seconds`` (held time included).

Paths under ``/_mlfn/`` are the platform's own API (``mlfn status``, ``mlfn rollout``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from localplatform.proxy import (
    DownstreamProtocol,
    Request,
    UpstreamError,
    error_response,
    json_response,
)
from localplatform.revisions import StartFailure
from localplatform.routing import CONTROL_PREFIX, RolloutError, route
from localplatform.serving import Serving

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]


class Gateway:
    """The HTTP front door of ``mlfn dev``."""

    def __init__(
        self,
        serving: Serving,
        *,
        extra_status: Callable[[], dict[str, Any]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.serving = serving
        self.settings = serving.settings
        self.extra_status = extra_status
        self.rng = rng or random.Random()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[DownstreamProtocol] = set()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port); return the port."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: DownstreamProtocol(
                    self.handle, self._connections, self.settings.server.max_body_bytes
                ),
                host,
                port,
                backlog=2048,
                reuse_address=True,
            )
        except OSError as err:
            raise OSError(
                f"the gateway cannot listen on {host}:{port}: {err.strerror or err}; "
                "pick another port with --port (0: any free one) or MLFN_PLATFORM_PORT"
            ) from err
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop accepting; let requests in progress finish within ``grace`` seconds."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
            conn.close_if_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            log.warning(
                "gateway: %d requests still running after %.1fs; closing", self._active, grace
            )
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.close()
        log.info("gateway stopped")

    async def handle(self, req: Request, down: DownstreamProtocol) -> None:
        """Route one request: to the control API, or through a revision to an instance."""
        if req.path.startswith(CONTROL_PREFIX.encode()):
            await self._control(req, down)
            return
        serving = self.serving
        found = route(
            req.host,
            req.path,
            serving.functions,
            self.settings.common.namespace,
            self.settings.platform.domain,
        )
        if found is None:
            down.send(
                error_response(
                    404,
                    f"no function for host {(req.host or b'').decode('latin-1')!r} and path "
                    f"{req.path.decode('latin-1')!r}; use /<function>/... or the Host header "
                    f"<function>.{self.settings.common.namespace}.{self.settings.platform.domain}",
                    functions=sorted(serving.functions),
                ),
                req.keep_alive,
            )
            return
        fn = serving.functions[found.function]
        rev = fn.revisions[fn.traffic.pick(self.rng)]
        clock = time.monotonic
        start = clock()
        self._active += 1
        self._idle.clear()
        rev.begin(start)
        inst = None
        try:
            async with asyncio.timeout_at(start + rev.spec.timeout_seconds):
                data = req.encode(found.path)
                head = req.method == b"HEAD"
                while True:
                    inst = rev.acquire()
                    if inst is None:
                        inst = await rev.wait_instance()
                    try:
                        keep = await inst.pool.forward(data, down, head)
                        break
                    except UpstreamError as err:
                        if not err.refused:
                            raise
                        # the instance is gone (its exit not reported yet): try another one
                        serving.unreachable(inst)
                        rev.release(inst)
                        inst = None
            rev.served += 1
            down.finish(keep and req.keep_alive)
        except UpstreamError as err:
            rev.errors += 1
            if err.sent:
                down.finish(False)
            else:
                message = f"instance {inst.id} failed the request: {err}" if inst else str(err)
                down.send(
                    error_response(502, message, function=fn.name, revision=rev.name),
                    req.keep_alive,
                )
        except StartFailure as err:
            rev.errors += 1
            down.send(
                error_response(502, str(err), function=fn.name, revision=rev.name), req.keep_alive
            )
        except TimeoutError:
            rev.errors += 1
            where = "waiting for an instance" if inst is None else f"waiting for {inst.id}"
            down.send(
                error_response(
                    504,
                    f"no response within the function's timeout of {rev.spec.timeout_seconds}s "
                    f"({where})",
                    function=fn.name,
                    revision=rev.name,
                ),
                False,
            )
        finally:
            rev.end(clock())
            if inst is not None:
                stop = rev.release(inst)
                if stop is not None:
                    serving.released(stop)
            self._active -= 1
            if not self._active:
                self._idle.set()

    # --- control API --------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """The platform's state, as ``GET /_mlfn/status`` returns it."""
        await self.serving.refresh_models()
        out: dict[str, Any] = {
            "gateway": f"http://{self.settings.platform.host}:{self.port}",
            "namespace": self.settings.common.namespace,
            "domain": self.settings.platform.domain,
            "functions": self.serving.snapshot(),
        }
        if self.extra_status is not None:
            out.update(self.extra_status())
        return out

    async def _control(self, req: Request, down: DownstreamProtocol) -> None:
        path = req.path.split(b"?", 1)[0][len(CONTROL_PREFIX) :].decode("latin-1")
        if path == "status" and req.method == b"GET":
            down.send(json_response(200, await self.status()), req.keep_alive)
        elif path == "metrics" and req.method == b"GET":
            body = self.serving.metrics.render()
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            down.send(head.encode() + body, req.keep_alive)
        elif path == "healthz":
            down.send(json_response(200, {"status": "ok"}), req.keep_alive)
        elif path == "rollout" and req.method == b"POST":
            status, payload = self._rollout(req.body)
            down.send(json_response(status, payload), req.keep_alive)
        else:
            down.send(
                error_response(404, f"no platform endpoint {path!r}; try status, metrics, rollout"),
                req.keep_alive,
            )

    def _rollout(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            move = json.loads(body or b"{}")
            name = str(move["function"])
        except (ValueError, KeyError, TypeError):
            return 400, {"error": 'send {"function": NAME, "percent": P | "promote" | "rollback"}'}
        fn = self.serving.functions.get(name)
        if fn is None:
            return 404, {
                "error": f"no function {name!r}; found: {', '.join(self.serving.functions)}"
            }
        try:
            if move.get("promote"):
                fn.traffic.promote()
            elif move.get("rollback"):
                fn.traffic.rollback()
            elif move.get("percent") is not None:
                fn.traffic.rollout(int(move["percent"]))
            else:
                return 400, {"error": "say one of percent, promote or rollback"}
        except RolloutError as err:
            return 409, {"error": str(err)}
        log.info("traffic of %s: %s", name, dict(fn.traffic.describe()))
        self.serving.after_rollout(fn)
        return 200, {"function": name, "traffic": dict(fn.traffic.describe())}
