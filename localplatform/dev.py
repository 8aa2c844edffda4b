"""``mlfn dev``: start the whole platform on one machine, stop it in order.

Start: the embedded broker and the zygote (which imports the functions) in parallel, then
the gateway, then the eventing plane whose dispatchers POST to the gateway (so events
wake functions from zero as HTTP requests do). One line on stdout says where the gateway
is once everything is up; a run file under ``settings.common.home`` lets ``mlfn status`` and
``mlfn rollout`` find it.

Stop (Ctrl-C, SIGTERM, or SIGHUP when its terminal closes): the eventing plane first (it
finishes and commits what it delivered), then the gateway (requests in progress finish),
then the instances (SIGTERM drains them) and the zygotes, the broker last. Instances and zygotes also die with this
process if it is killed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localplatform.gateway import Gateway
from localplatform.routing import UI_PATH
from localplatform.serving import Serving
from localplatform.settings import LocalRoot
from runtime import localstate
from runtime.spec import FunctionSpec, Rollout

__all__ = ["DevOptions", "run", "run_file"]

log = logging.getLogger("localplatform.dev")


@dataclass(frozen=True)
class DevOptions:
    """What ``mlfn dev`` was asked for on its command line."""

    port: int
    broker_port: int = 0
    eventing: bool = True


def run_file(settings: LocalRoot) -> Path:
    """Where a running ``mlfn dev`` writes its pid and ports."""
    return localstate.run_file(settings.common.home)


class _Broker:
    """The embedded broker, or nothing when an external Kafka is configured."""

    def __init__(self, settings: LocalRoot, port: int) -> None:
        self.settings = settings
        self.port = port
        self.broker: Any = None
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> str:
        """Start the broker (in a worker thread); a stop that came first wins."""
        if self.settings.eventing.bootstrap_servers:
            return self.settings.eventing.bootstrap_servers
        from eventing.broker import EmbeddedBroker

        log_file = self.settings.common.home / "platform" / "broker.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(self.port, log_file=log_file).start()
        with self._lock:
            self.broker = broker
            stopped = self._stopped
        if stopped:  # Ctrl-C arrived while the broker was starting
            broker.stop()
        return str(broker.bootstrap)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            broker = self.broker
        if broker is not None:
            broker.stop()


class DevPlatform:
    """Everything ``mlfn dev`` runs, with an explicit start and a bounded stop."""

    def __init__(self, settings: LocalRoot, options: DevOptions) -> None:
        self.settings = settings
        self.options = options
        self.serving = Serving(settings)
        self.gateway = Gateway(self.serving, extra_status=self._eventing_status)
        self.broker = _Broker(settings, options.broker_port) if options.eventing else None
        self.bootstrap: str | None = None
        self.plane: Any = None
        self.canary: Any = None

    def _eventing_status(self) -> dict[str, Any]:
        if self.plane is None:
            return {"eventing": None}
        try:
            return {"eventing": {"bootstrap": self.bootstrap, "dispatchers": self.plane.stats()}}
        except Exception as err:  # stats are best effort; status must still answer
            return {"eventing": {"bootstrap": self.bootstrap, "error": str(err)}}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        broker = loop.run_in_executor(None, self.broker.start) if self.broker is not None else None
        await self.serving.start()
        if broker is not None:
            self.bootstrap = await broker
        await self.gateway.start(self.settings.platform.host, self.options.port)
        if self.bootstrap is not None:
            await loop.run_in_executor(None, self._start_plane)
        self._write_run_file()
        self._start_canary()

    def _start_canary(self) -> None:
        """Judge canary revisions automatically when a function asks for it (``Rollout``)."""
        if not any(
            fn.latest.spec.rollout.strategy == "canary" for fn in self.serving.functions.values()
        ):
            return
        from localplatform.canary_io import start_local

        def rollout_of(name: str) -> Rollout | None:
            fn = self.serving.functions.get(name)
            return fn.latest.spec.rollout if fn is not None else None

        self.canary = start_local(self.settings, rollout_of)
        log.info("canary controller started")

    def _start_plane(self) -> None:
        from eventing.plane import EventingPlane

        specs: list[FunctionSpec] = [fn.latest.spec for fn in self.serving.functions.values()]
        port = self.gateway.port
        plane = EventingPlane(
            self.settings,
            specs,
            lambda name: f"http://127.0.0.1:{port}/{name}",
            bootstrap=self.bootstrap,
        )
        plane.start()
        self.plane = plane
        self.serving.metrics.registry.register(plane.collector())

    def _write_run_file(self) -> None:
        path = run_file(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "gateway": f"http://{self.settings.platform.host}:{self.gateway.port}",
            "control": f"http://127.0.0.1:{self.gateway.port}/_mlfn",
            "console": f"http://{self.settings.platform.host}:{self.gateway.port}{UI_PATH}",
            "bootstrap": self.bootstrap,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(path)

    def ready_line(self) -> str:
        """What ``mlfn dev`` prints once it is up: where the gateway and the console are."""
        names = ", ".join(self.serving.functions) or "none"
        gateway = f"http://{self.settings.platform.host}:{self.gateway.port}"
        line = f"mlfn dev ready: gateway {gateway} (functions: {names}"
        if self.bootstrap:
            line += f"; broker {self.bootstrap}"
        return line + f"; `mlfn status` shows the rest)\n  console: {gateway}{UI_PATH}"

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        grace = self.settings.platform.drain_seconds
        if self.canary is not None:
            await loop.run_in_executor(None, self.canary.stop)
        if self.plane is not None:
            try:
                await asyncio.wait_for(loop.run_in_executor(None, self.plane.stop), grace + 20)
                log.info("eventing plane stopped; delivered offsets committed")
            except TimeoutError:
                log.error("the eventing plane did not stop within %.0fs; going on", grace + 20)
        await self.gateway.stop(grace)
        await self.serving.stop()
        if self.broker is not None:
            await loop.run_in_executor(None, self.broker.stop)
        with contextlib.suppress(OSError):
            path = run_file(self.settings)
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


async def _main(settings: LocalRoot, options: DevOptions) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    why: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        why.append(sig.name)
        stop.set()

    # SIGHUP: the terminal closed; stop in order too, or the broker outlives the platform
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    platform = DevPlatform(settings, options)
    starting = asyncio.ensure_future(platform.start())
    stopped = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if starting in done and starting.exception() is None:
        print(platform.ready_line(), flush=True)
        await stop.wait()
    elif starting in done:
        log.error("mlfn dev could not start: %s", starting.exception())
        code = 1
    else:
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
    stopped.cancel()
    log.info("mlfn dev stopping (%s)", why[0] if why else "start-up failed")
    await platform.stop()
    with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
        print("mlfn dev stopped", flush=True)
    return code


def run(settings: LocalRoot, options: DevOptions) -> int:
    """Run the platform until Ctrl-C/SIGTERM; return the exit code."""
    factory: Any = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_main(settings, options))
