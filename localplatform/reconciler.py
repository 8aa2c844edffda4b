"""The reconciler: functions, their revisions and zygote generations, and their instances.

:class:`Reconciler` owns everything that changes the set of instances. It starts a zygote
per generation of the functions' source and creates a revision per function and source
hash; :meth:`Reconciler.scale` makes a revision's instances match the desired count the
autoscaler decided (spawn, or drain then stop); the zygotes' instance events (spawned,
phase, exit) update the instances, and a crashed instance or a lost zygote is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from localplatform.autoscaler import Policy
from localplatform.effective import effective_spec
from localplatform.instances import ZygoteClient
from localplatform.metrics import PlatformMetrics
from localplatform.models import ModelPointers
from localplatform.revisions import START_FAILURES_BEFORE_ERROR, Instance, Revision
from localplatform.routing import Traffic
from localplatform.settings import LocalRoot
from runtime.spec import FunctionSpec

__all__ = ["FunctionState", "Reconciler"]

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FunctionState:
    """One function: its revisions (oldest first) and the traffic split between them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.revisions: dict[str, Revision] = {}
        self.traffic = Traffic()
        self.source_file: str | None = None
        self.rejected_hash: str | None = None
        self.model_seen: int | None = None  # the model version ``latest`` named when last read
        self.model_token: Hashable | None = None

    @property
    def latest(self) -> Revision:
        name = self.traffic.latest
        assert name is not None
        return self.revisions[name]


class Reconciler:
    """Functions, revisions, zygotes and instances; every method runs on the event loop.

    ``functions`` is filled in here and read by the rest of the platform (gateway,
    metrics); ``poke`` is handed to every new revision (its activator calls it when a
    request is held); ``readiness`` runs for each spawned instance until it is ready, or
    returns why it cannot be (then the instance is stopped and counts as a failed start).
    """

    def __init__(
        self,
        settings: LocalRoot,
        clock: Callable[[], float],
        functions: dict[str, FunctionState],
        metrics: PlatformMetrics,
        models: ModelPointers,
        poke: Callable[[Revision], None],
        readiness: Callable[[Instance], Awaitable[str | None]],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.models = models
        self.poke = poke
        self.readiness = readiness
        self.functions = functions
        self.zygotes: list[ZygoteClient] = []
        self.stopping = False
        self._by_instance: dict[str, Instance] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def stop(self) -> None:
        """Cancel the pending work, fail held requests, stop every instance and zygote."""
        self.stopping = True
        for task in tuple(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for fn in self.functions.values():
            for rev in fn.revisions.values():
                rev.fail_waiters()
        grace = self.settings.server.drain_seconds
        await asyncio.gather(*(z.stop(grace) for z in self.zygotes))

    def track(self, coro: Any) -> None:
        """Run ``coro`` in the background until it ends or :meth:`stop` cancels it."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- generations and revisions --------------------------------------------------------
    async def new_generation(self) -> ZygoteClient:
        """Start a zygote on the current source; a revision for each function it changed."""
        zygote = ZygoteClient(
            self.settings, self._on_event, len(self.zygotes) + 1, self._zygote_lost
        )
        found = await zygote.start()
        self.zygotes.append(zygote)
        now = self.clock()
        for name, info in found.items():
            spec = effective_spec(FunctionSpec.model_validate(info["spec"]), self.settings.platform)
            fn = self.functions.get(name)
            if fn is None:
                fn = self.functions[name] = FunctionState(name)
            fn.source_file = info.get("file")
            if fn.traffic.latest and fn.latest.source_hash == info["hash"]:
                continue
            number = len(fn.revisions) + 1
            rev = Revision(
                f"{name}-{number:05d}",
                spec,
                str(info["hash"]),
                Policy.from_scaling(spec.scaling, self.settings.platform),
                zygote.generation,
                now,
                self.poke,
                model=self._read_model(fn, spec),
            )
            self.add_revision(fn, rev, now, first=number == 1)
        return zygote

    def _read_model(self, fn: FunctionState, spec: FunctionSpec) -> int | None:
        """The version a new revision of ``fn`` is pinned to: the one ``latest`` names now."""
        if spec.model is None:
            return None
        fn.model_token = self.models.token(spec.model.name)
        fn.model_seen = self.models.latest(spec.model.name)
        if spec.rollout.strategy == "replace":
            return None  # unpinned: its instances follow ``latest`` and hot-swap
        return fn.model_seen

    def add_revision(
        self, fn: FunctionState, rev: Revision, now: float, *, first: bool = False
    ) -> None:
        """Give ``rev`` its share of ``fn``'s traffic and its initial scale."""
        spec = rev.spec
        fn.revisions[rev.name] = rev
        r = spec.rollout
        percent = 100 if first or r.strategy == "replace" else 0 if r.iterations else r.step_weight
        fn.traffic.add(rev.name, percent)
        model = "" if rev.model is None else f"model v{rev.model}, "
        log.info(
            "revision %s created (%ssource %s, %d%% of traffic)",
            rev.name,
            model,
            rev.source_hash,
            percent,
        )
        self.scale(rev, rev.autoscaler.initial(), now, "initial scale")

    def zygote_of(self, rev: Revision) -> ZygoteClient:
        return self.zygotes[rev.generation - 1]

    def revisions_of(self, generation: int) -> list[Revision]:
        return [
            rev
            for fn in self.functions.values()
            for rev in fn.revisions.values()
            if rev.generation == generation
        ]

    def _zygote_lost(self, zygote: ZygoteClient) -> None:
        """A zygote died (its instances die with it): count them as crashed, start another."""
        if self.stopping:
            return
        log.error("zygote %d exited unexpectedly; restarting it", zygote.generation)
        for rev in self.revisions_of(zygote.generation):
            for inst in list(rev.instances.values()):
                self._exited(inst, {"message": "its zygote exited"})
        self.track(self._restart_zygote(zygote.generation))

    async def _restart_zygote(self, generation: int) -> None:
        zygote = ZygoteClient(self.settings, self._on_event, generation, self._zygote_lost)
        try:
            found = await zygote.start()
        except asyncio.CancelledError:
            await zygote.stop(0)
            raise
        except Exception as err:
            log.error("zygote %d cannot restart: %s", generation, err)
            return
        self.zygotes[generation - 1] = zygote
        now = self.clock()
        for rev in self.revisions_of(generation):
            if found.get(rev.spec.name, {}).get("hash") != rev.source_hash:
                log.warning("%s: the source changed since it was created", rev.name)
            self.scale(rev, rev.desired, now, "zygote restarted")

    # --- instances ------------------------------------------------------------------------
    def scale(self, rev: Revision, desired: int, now: float, reason: str) -> None:
        """Make ``rev``'s live instances ``desired``: spawn, or stop routing and drain."""
        if self.stopping:
            return
        rev.desired = desired
        live = rev.live
        if len(live) < desired:
            if now < rev.next_spawn_at or not self.zygote_of(rev).alive:
                return
            log.info("%s: scale %d -> %d (%s)", rev.name, len(live), desired, reason)
            for _ in range(desired - len(live)):
                self._spawn(rev, now)
        elif len(live) > desired:
            excess = len(live) - desired
            victims = sorted(live, key=lambda i: (i.state == "ready", i.in_flight))[:excess]
            for inst in victims:
                rev.stop_routing(inst)
                if inst.in_flight == 0:
                    self.terminate(inst)
            log.info("%s: scale %d -> %d (%s)", rev.name, len(live), desired, reason)

    def _spawn(self, rev: Revision, now: float) -> None:
        if not self.zygote_of(rev).alive:
            return  # restarting: the next reconcile spawns it
        inst = Instance(rev.next_instance_id(), rev, _free_port(), now)
        if rev.spec.grpc:  # the gRPC gateway routes to it
            inst.grpc_port = _free_port()
        rev.instances[inst.id] = inst
        self._by_instance[inst.id] = inst
        self.zygote_of(rev).spawn(
            inst.id, rev.spec.name, inst.port, rev.model, inst.grpc_port, revision=rev.name
        )

    def terminate(self, inst: Instance) -> None:
        """SIGTERM ``inst`` (it drains its requests in flight, then exits)."""
        if inst.pid is not None:
            self.zygote_of(inst.revision).kill(inst.pid, signal.SIGTERM)

    def unreachable(self, inst: Instance) -> None:
        """The gateway cannot connect to ``inst``: route around it and make sure it stops."""
        if inst.state == "ready":
            log.warning("%s refuses connections; replacing it", inst.id)
            inst.revision.stop_routing(inst)
            self.terminate(inst)
            self.scale(inst.revision, inst.revision.desired, self.clock(), f"replace {inst.id}")

    # --- zygote events --------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        inst = self._by_instance.get(str(event.get("id")))
        if inst is None:
            return
        kind = event.get("ev")
        if kind == "spawned":
            inst.pid = int(event["pid"])
            if inst.state == "terminating":
                self.terminate(inst)
            else:
                self.track(self._await_ready(inst))
        elif kind == "phase":
            if event["phase"] == "spawn":
                inst.t_spawn = float(event["t"])
            elif event["phase"] == "imports":
                inst.t_imports = float(event["t"])
        elif kind in ("exit", "error"):
            self._exited(inst, event)

    async def _await_ready(self, inst: Instance) -> None:
        failure = await self.readiness(inst)
        if failure is not None and inst.state == "starting":
            log.warning("%s cannot become ready (%s); stopping it", inst.id, failure)
            inst.failure = failure  # the reason its exit reports
            self.terminate(inst)

    def _exited(self, inst: Instance, event: dict[str, Any]) -> None:
        rev = inst.revision
        was = inst.state
        inst.state = "exited"
        inst.exit_code = event.get("code")
        rev.remove(inst)
        self._by_instance.pop(inst.id, None)
        if was == "terminating" or self.stopping:
            return
        now = self.clock()
        reason = inst.failure or event.get("message") or f"exit code {inst.exit_code}"
        if was == "starting":
            rev.start_failures += 1
            rev.last_failure = str(reason)
            rev.next_spawn_at = now + min(0.25 * 2 ** (rev.start_failures - 1), 10.0)
            log.warning("%s failed to start (%s)", inst.id, reason)
            if rev.start_failures >= START_FAILURES_BEFORE_ERROR:
                rev.fail_waiters()
        else:
            log.warning(
                "%s crashed (%s) with %d requests in flight; replacing it",
                inst.id,
                reason,
                inst.in_flight,
            )
        self.metrics.crashes.labels(rev.spec.name).inc()
        self.scale(rev, rev.desired, now, f"replace {inst.id}")
