"""The platform's side of a zygote: start it, ask it to fork instances, hear what happens.

A :class:`ZygoteClient` runs ``python -m localplatform.zygote`` in its own session (so a
Ctrl-C in the terminal reaches only ``mlfn dev``, which then stops everything in order)
and turns its JSON-line events into calls of ``on_event``. :func:`probe_ready` polls an
instance's ``/readyz`` until it answers 200, or until the server says it cannot get there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import urllib3

from localplatform.settings import LocalRoot

__all__ = ["ZygoteClient", "ZygoteError", "fetch", "probe_ready"]

log = logging.getLogger(__name__)

Event = dict[str, Any]


class ZygoteError(RuntimeError):
    """The zygote could not start or import the functions package."""


class ZygoteClient:
    """One zygote process (one generation of the functions' source)."""

    def __init__(
        self,
        settings: LocalRoot,
        on_event: Callable[[Event], None],
        generation: int,
        on_lost: Callable[[ZygoteClient], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_event = on_event
        self.on_lost = on_lost
        self.generation = generation
        self._stopping = False
        self._lost = False
        self.functions: dict[str, Event] = {}
        self.import_seconds = 0.0
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        """Started, not stopped, and still sending events."""
        return self._proc is not None and self._proc.returncode is None and not self._lost

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, timeout: float = 120.0) -> dict[str, Event]:
        """Start the zygote; return its functions (spec and source hash by name).

        Raises:
            ZygoteError: the functions package cannot be imported, or the zygote died.
        """
        env = dict(os.environ)
        # one BLAS thread per instance: instances are the unit of parallelism here
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "localplatform.zygote",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=env,
            limit=1 << 20,
        )
        config = {
            # one worker process per instance: the local autoscaler adds instances for
            # load (it counts each as one replica, as Knative counts pods), and a fork of
            # N more workers would add their start-up to every cold start
            "settings": self.settings.model_copy(
                update={"server": self.settings.server.model_copy(update={"workers": 1})}
            ).model_dump(mode="json"),
            "server": self.settings.platform.server,
            "preload": [m.strip() for m in self.settings.platform.preload.split(",") if m.strip()],
            "host": "127.0.0.1",
        }
        self._write(config)
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        except TimeoutError:
            await self.stop(0)
            raise ZygoteError(
                f"the zygote did not import the functions in {timeout:.0f}s"
            ) from None
        if not line:
            code = await self._proc.wait()
            raise ZygoteError(
                f"the zygote exited with code {code} while importing (see the log above)"
            )
        hello = json.loads(line)
        if hello.get("ev") != "hello":
            await self.stop(0)
            raise ZygoteError(
                f"cannot load the functions package {self.settings.common.functions_package!r}: "
                f"{hello.get('message', hello)}"
            )
        self.functions = hello["functions"]
        self.import_seconds = float(hello.get("import_s", 0.0))
        self._reader = asyncio.create_task(self._read(), name=f"zygote-{self.generation}")
        return self.functions

    def _write(self, message: Event) -> None:
        if self._proc is None or self._proc.stdin is None or self._proc.stdin.is_closing():
            return
        self._proc.stdin.write((json.dumps(message) + "\n").encode())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                break
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                log.warning("zygote wrote a line that is not JSON: %r", line[:200])
                continue
            try:
                self.on_event(event)
            except Exception:
                log.exception("handling zygote event %s failed", event.get("ev"))
        self._lost = True
        if self._stopping:
            log.info("zygote %d stopped sending events", self.generation)
        elif self.on_lost is not None:
            self.on_lost(self)

    def spawn(
        self,
        instance: str,
        function: str,
        port: int,
        model_version: int | None = None,
        grpc_port: int | None = None,
        *,
        revision: str | None = None,
    ) -> None:
        """Fork an instance of ``function`` serving on ``port``, pinned to ``model_version``
        (None: it follows the store's ``latest``), with gRPC on ``grpc_port`` if given, as
        part of ``revision`` (its metrics' ``revision`` label, as Knative's ``K_REVISION``
        gives it on a cluster)."""
        server: dict[str, Any] = {}
        if grpc_port is not None:
            server["grpc_port"] = grpc_port
        if revision is not None:
            server["revision"] = revision
        overrides: dict[str, Any] = {"models": {"model_version": model_version}}
        if server:
            overrides["server"] = server
        self._write(
            {
                "op": "spawn",
                "id": instance,
                "function": function,
                "port": port,
                "t": time.monotonic(),
                "settings": overrides,
            }
        )

    def kill(self, pid: int, sig: int = signal.SIGTERM) -> None:
        self._write({"op": "kill", "pid": pid, "sig": int(sig)})

    async def stop(self, grace: float) -> None:
        """Stop every instance (SIGTERM, SIGKILL after ``grace``), then the zygote."""
        self._stopping = True
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._write({"op": "shutdown", "grace": grace})
            try:
                await asyncio.wait_for(proc.wait(), grace + 5.0)
            except TimeoutError:
                log.warning("zygote %d did not stop in time; killing it", self.generation)
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 2.0)
            except TimeoutError:
                self._reader.cancel()
        if proc.stdin is not None:
            proc.stdin.close()


_HTTP = urllib3.PoolManager(maxsize=16, block=False, retries=False)
"""The platform's client for its instances' ``/readyz`` and ``/metrics`` (loopback only)."""


async def fetch(port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """GET ``http://127.0.0.1:port/path`` (off the event loop); (status, body).

    Raises:
        OSError: the instance does not answer (refused, reset, timed out).
    """

    def get() -> tuple[int, bytes]:
        try:
            r = _HTTP.request("GET", f"http://127.0.0.1:{port}{path}", timeout=timeout)
        except urllib3.exceptions.HTTPError as err:
            raise OSError(f"127.0.0.1:{port}{path}: {err}") from err
        return r.status, r.data

    return await asyncio.get_running_loop().run_in_executor(None, get)


async def probe_ready(
    port: int, alive: Callable[[], bool], interval: float = 0.01
) -> tuple[bool, str | None]:
    """Poll ``/readyz`` until 200 (``True, None``), until the server says it cannot become
    ready (``False, reason``: its model failed to load), or ``alive()`` turns false
    (``False, None``)."""
    while alive():
        try:
            status, body = await fetch(port, "/readyz", timeout=2.0)
            if status == 200:
                return True, None
            failure = _failure(body)
            if failure is not None:
                return False, failure
        except (OSError, TimeoutError, ValueError, IndexError):
            pass
        await asyncio.sleep(interval)
    return False, None


def _failure(body: bytes) -> str | None:
    """The reason of a final ``/readyz`` 503 (``{"status": "failed", "reason": ...}``)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if isinstance(answer, dict) and answer.get("status") == "failed":
        return str(answer.get("reason") or "the server reports that it cannot become ready")
    return None
