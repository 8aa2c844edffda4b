"""``mlfn dev``: start the whole platform on one machine, stop it in order.

Start: the embedded broker and the zygote (which imports the functions) in parallel, then
the gateway, then the eventing plane whose dispatchers POST to the gateway (so events
wake functions from zero as HTTP requests do). One line on stdout says where the gateway
is once everything is up; a run file under ``settings.common.home`` lets ``mlfn status`` and
``mlfn rollout`` find it.

Stop (Ctrl-C, SIGTERM, or SIGHUP when its terminal closes): the eventing plane first (in-flight deliveries finish within
``MLFN_PLATFORM_DRAIN_SECONDS``, delivered offsets are committed), then the embedded
broker's unconsumed records are saved to ``<home>/platform/backlog.jsonl``
(:mod:`eventing.backlog`) and replayed into the next broker on the next start, then the
gateway (requests in progress finish), the instances (SIGTERM drains them) and the
zygotes, the broker last. The last line says what the stop left.

Killed (SIGKILL): instances and zygotes die with this process (``PR_SET_PDEATHSIG``); the
embedded broker, in a session of its own, keeps running with its log, and the next
``mlfn dev`` adopts it (``<home>/platform/broker.json``), so what it held is delivered then.
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


def broker_file(settings: LocalRoot) -> Path:
    """Where ``mlfn dev`` notes its embedded broker (pid, port, epoch) while it runs."""
    return settings.common.home / "platform" / "broker.json"


def backlog_file(settings: LocalRoot) -> Path:
    """Where a clean stop saves the embedded broker's unconsumed records."""
    return settings.common.home / "platform" / "backlog.jsonl"


def dataset_counts(settings: LocalRoot) -> dict[str, dict[str, int]]:
    """Rows and duplicates dropped (redeliveries) of each local dataset, for ``mlfn status``."""
    from runtime.datasets import Dataset

    root = settings.dataset_store_path
    out: dict[str, dict[str, int]] = {}
    for path in sorted(root.glob("*.sqlite3")) if root.is_dir() else []:
        with Dataset(path.stem, path) as ds:
            out[path.stem] = {"rows": ds.count(), "duplicates": ds.duplicates()}
    return out


class _DuplicatesCollector:
    """``mlfn_eventing_duplicates_total``: redelivered events each dataset dropped (durable)."""

    def __init__(self, settings: LocalRoot) -> None:
        self.settings = settings

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        fam = CounterMetricFamily(
            "mlfn_eventing_duplicates",
            "Events that reached a dataset again (redeliveries) and were dropped by its "
            "idempotency on the event id, since the dataset was created",
            labels=["dataset"],
        )
        for name, counts in dataset_counts(self.settings).items():
            fam.add_metric([name], counts["duplicates"])
        yield fam


class _Broker:
    """The embedded broker, or nothing when an external Kafka is configured."""

    def __init__(self, settings: LocalRoot, port: int) -> None:
        self.settings = settings
        self.port = port
        self.broker: Any = None
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def epoch(self) -> str | None:
        """The embedded broker's epoch (None for an external Kafka, whose log is durable)."""
        return str(self.broker.epoch) if self.broker is not None else None

    def start(self) -> str:
        """Start (or adopt) the broker and replay the saved backlog; a stop that came first wins."""
        if self.settings.eventing.bootstrap_servers:
            return self.settings.eventing.bootstrap_servers
        from eventing.broker import EmbeddedBroker

        log_file = self.settings.common.home / "platform" / "broker.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        adopted = self._adopt()
        broker = adopted or EmbeddedBroker(self.port, log_file=log_file).start()
        with self._lock:
            self.broker = broker
            stopped = self._stopped
        if stopped:  # Ctrl-C arrived while the broker was starting
            if adopted is None:  # an adopted one keeps its records for the next start
                broker.stop()
            return str(broker.bootstrap)
        path = broker_file(self.settings)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": broker.pid, "port": broker.port, "epoch": broker.epoch}))
        tmp.replace(path)
        self._replay(broker.bootstrap)
        return str(broker.bootstrap)

    def _adopt(self) -> Any:
        from eventing.broker import EmbeddedBroker

        path = broker_file(self.settings)
        try:
            info = json.loads(path.read_text())
            broker = EmbeddedBroker.adopt(int(info["pid"]), int(info["port"]), str(info["epoch"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if broker is None:
            log.info("the broker noted in %s is gone; starting a new one", path)
            return None
        log.warning(
            "adopting the embedded broker left running by a mlfn dev that did not stop "
            "cleanly (pid %s, %s): its records are delivered now",
            broker.pid,
            broker.bootstrap,
        )
        return broker

    def _replay(self, bootstrap: str) -> None:
        from eventing.backlog import replay

        path = backlog_file(self.settings)
        if not path.exists():
            return
        report = replay(bootstrap, path)
        log.info(
            "replayed the backlog of the last stop: %s, %d retry count(s)",
            report.describe(),
            report.retry_counts,
        )

    def save_backlog(self, groups: dict[str, list[str]]) -> str:
        """Save the embedded broker's unconsumed records (before it stops); say what was saved."""
        if self.broker is None or not self.broker.running:
            return "no embedded broker"
        from eventing.backlog import snapshot
        from eventing.errors import EventingError

        path = backlog_file(self.settings)
        try:
            report = snapshot(self.broker.bootstrap, groups, epoch=self.broker.epoch, path=path)
        except EventingError as err:
            log.error("could not save the broker's unconsumed records: %s; they are lost", err)
            return f"unconsumed records LOST: {err}"
        if not report.total and not report.retry_counts:
            return "no unconsumed records"
        return f"{report.describe()} unconsumed saved to {path} (replayed on the next start)"

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            broker = self.broker
        if broker is not None:
            broker.stop()
            with contextlib.suppress(OSError):
                broker_file(self.settings).unlink()


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
        self.pings: Any = None
        self.grpc: Any = None  # the gateway's gRPC port, when a function asks for gRPC
        self.stop_report = ""

    def _eventing_status(self) -> dict[str, Any]:
        if self.plane is None:
            return {"eventing": None}
        try:
            return {
                "eventing": {
                    "bootstrap": self.bootstrap,
                    "epoch": self.broker.epoch if self.broker is not None else None,
                    "dispatchers": self.plane.stats(),
                    "datasets": dataset_counts(self.settings),
                }
            }
        except Exception as err:  # stats are best effort; status must still answer
            return {"eventing": {"bootstrap": self.bootstrap, "error": str(err)}}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        broker = loop.run_in_executor(None, self.broker.start) if self.broker is not None else None
        await self.serving.start()
        if broker is not None:
            self.bootstrap = await broker
        await self.gateway.start(self.settings.platform.host, self.options.port)
        if any(fn.latest.spec.grpc for fn in self.serving.functions.values()):
            from localplatform.grpc_gateway import GrpcGateway

            self.grpc = GrpcGateway(self.serving)
            await self.grpc.start(self.settings.platform.host, self.settings.platform.grpc_port)
        if self.bootstrap is not None:
            await loop.run_in_executor(None, self._start_plane)
        self._start_pings()
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

    def _start_pings(self) -> None:
        """Knative's PingSource, locally: the time trigger of each retrain policy."""
        from eventing.ping import PingSources, ping_targets

        port = self.gateway.port
        specs = [fn.latest.spec for fn in self.serving.functions.values()]
        targets = ping_targets(
            specs, lambda name: f"http://127.0.0.1:{port}/{name}", self.settings.common.namespace
        )
        if targets:
            self.pings = PingSources(targets).start()
            log.info("ping sources started", extra={"pings": [t.name for t in targets]})

    def _start_plane(self) -> None:
        from eventing.plane import EventingPlane

        specs: list[FunctionSpec] = [fn.latest.spec for fn in self.serving.functions.values()]
        port = self.gateway.port
        plane = EventingPlane(
            self.settings,
            specs,
            lambda name: f"http://127.0.0.1:{port}/{name}",
            bootstrap=self.bootstrap,
            epoch=self.broker.epoch if self.broker is not None else None,
        )
        plane.start()
        self.plane = plane
        self.serving.metrics.registry.register(plane.collector())
        self.serving.metrics.registry.register(_DuplicatesCollector(self.settings))

    def _write_run_file(self) -> None:
        path = run_file(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "gateway": f"http://{self.settings.platform.host}:{self.gateway.port}",
            "control": f"http://127.0.0.1:{self.gateway.port}/_mlfn",
            "console": f"http://{self.settings.platform.host}:{self.gateway.port}{UI_PATH}",
            "grpc": None if self.grpc is None else f"127.0.0.1:{self.grpc.port}",
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
        if self.grpc is not None:
            line += f"; gRPC {self.settings.platform.host}:{self.grpc.port}"
        return line + f"; `mlfn status` shows the rest)\n  console: {gateway}{UI_PATH}"

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        grace = self.settings.platform.drain_seconds
        if self.canary is not None:
            await loop.run_in_executor(None, self.canary.stop)
        if self.pings is not None:
            await loop.run_in_executor(None, self.pings.stop)
        report: list[str] = []
        if self.plane is not None:
            try:
                stopped = await asyncio.wait_for(
                    loop.run_in_executor(None, self.plane.stop, grace), grace + 20
                )
                report.append(stopped.describe())
                log.info("eventing plane stopped; delivered offsets committed: %s", report[-1])
            except TimeoutError:
                log.error("the eventing plane did not stop within %.0fs; going on", grace + 20)
                report.append("eventing plane did not stop in time")
        if self.broker is not None:
            groups: dict[str, list[str]] = {}
            for cfg in self.plane.configs if self.plane is not None else []:
                for topic in cfg.topics:
                    groups.setdefault(topic, []).append(cfg.group)
            report.append(await loop.run_in_executor(None, self.broker.save_backlog, groups))
            log.info("backlog: %s", report[-1])
        self.stop_report = "; ".join(report)
        if self.grpc is not None:
            await self.grpc.stop(grace)
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
        print(
            "mlfn dev stopped" + (f": {platform.stop_report}" if platform.stop_report else ""),
            flush=True,
        )
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
