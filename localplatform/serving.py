"""The serving layer: functions, their revisions, the autoscaler loop and the zygotes.

:class:`Serving` owns everything that changes the set of instances: it starts a zygote
per generation of the functions' source, creates a revision per function and source
hash, runs every revision's autoscaler once per tick and reconciles the instances with
the decision (spawn, or drain then stop), replaces crashed instances, and watches the
source files so that a saved change makes a new revision.

It also watches the model store's ``latest`` pointer of every function with a model. With
rollout strategy ``canary`` a new version makes a new revision whose instances are pinned to
it (:mod:`localplatform.models`) with ``rollout.percent`` of the traffic. With ``replace`` the
running instances hot-swap the new version in place, as pods do on a cluster (no cold start,
and a version that fails to load never takes traffic from the one that serves); the
revision's status follows the version its instances report.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import signal
import socket
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from localplatform.autoscaler import Policy
from localplatform.effective import effective_spec
from localplatform.instances import ZygoteClient, fetch, probe_ready
from localplatform.metrics import PlatformMetrics
from localplatform.models import ModelPointers
from localplatform.revisions import START_FAILURES_BEFORE_ERROR, ColdStart, Instance, Revision
from localplatform.routing import Traffic
from localplatform.settings import LocalRoot
from runtime.spec import FunctionSpec

__all__ = ["FunctionState", "Serving"]

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _file_hash(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    except OSError:
        return None


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


class Serving:
    """All functions served by ``mlfn dev``; every method runs on the event loop."""

    def __init__(self, settings: LocalRoot, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.functions: dict[str, FunctionState] = {}
        self.zygotes: list[ZygoteClient] = []
        self.metrics = PlatformMetrics(self)
        self.models = ModelPointers(settings)
        self._by_instance: dict[str, Instance] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._model_task: asyncio.Task[None] | None = None
        self._stopping = False

    # --- start and stop -------------------------------------------------------------------
    async def start(self) -> None:
        """Start the first zygote, one revision per function, and the background loops."""
        await self._new_generation()
        self._loop_task = asyncio.create_task(self._autoscale_loop(), name="autoscaler")
        if self.settings.platform.watch_seconds > 0:
            self._watch_task = asyncio.create_task(self._watch_loop(), name="source-watch")
        self._model_task = asyncio.create_task(self._model_watch_loop(), name="model-watch")

    async def stop(self) -> None:
        """Stop the loops, then every instance (drained by SIGTERM) and every zygote."""
        self._stopping = True
        for task in (self._loop_task, self._watch_task, self._model_task, *self._tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for fn in self.functions.values():
            for rev in fn.revisions.values():
                rev.fail_waiters()
        grace = self.settings.server.drain_seconds
        await asyncio.gather(*(z.stop(grace) for z in self.zygotes))
        log.info("serving stopped: every instance and zygote has exited")

    async def _new_generation(self) -> ZygoteClient:
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
            self._add_revision(fn, rev, now, first=number == 1)
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

    def _add_revision(
        self, fn: FunctionState, rev: Revision, now: float, *, first: bool = False
    ) -> None:
        spec = rev.spec
        fn.revisions[rev.name] = rev
        percent = 100 if first or spec.rollout.strategy == "replace" else spec.rollout.percent
        fn.traffic.add(rev.name, percent)
        model = "" if rev.model is None else f"model v{rev.model}, "
        log.info(
            "revision %s created (%ssource %s, %d%% of traffic)",
            rev.name,
            model,
            rev.source_hash,
            percent,
        )
        self._scale(rev, rev.autoscaler.initial(), now, "initial scale")

    def zygote_of(self, rev: Revision) -> ZygoteClient:
        return self.zygotes[rev.generation - 1]

    def _revisions_of(self, generation: int) -> list[Revision]:
        return [
            rev
            for fn in self.functions.values()
            for rev in fn.revisions.values()
            if rev.generation == generation
        ]

    def _zygote_lost(self, zygote: ZygoteClient) -> None:
        """A zygote died (its instances die with it): count them as crashed, start another."""
        if self._stopping:
            return
        log.error("zygote %d exited unexpectedly; restarting it", zygote.generation)
        for rev in self._revisions_of(zygote.generation):
            for inst in list(rev.instances.values()):
                self._exited(inst, {"message": "its zygote exited"})
        self._track(self._restart_zygote(zygote.generation))

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
        for rev in self._revisions_of(generation):
            if found.get(rev.spec.name, {}).get("hash") != rev.source_hash:
                log.warning("%s: the source changed since it was created", rev.name)
            self._scale(rev, rev.desired, now, "zygote restarted")

    # --- scaling --------------------------------------------------------------------------
    def poke(self, rev: Revision) -> None:
        """A request is held at ``rev``: scale from zero now, as the activator pokes the KPA."""
        now = self.clock()
        decision = rev.autoscaler.poke(now, len(rev.ready), max(rev.waiting, 1))
        if decision is not None and not rev.live:
            rev.decisions.append(decision)
            rev.last_decision = decision
            self._scale(rev, max(decision.desired, 1), now, decision.reason)

    async def _autoscale_loop(self) -> None:
        tick = self.settings.platform.tick_seconds
        log.info("autoscaler started (tick %.2fs)", tick)
        try:
            while True:
                now = self.clock()
                for fn in self.functions.values():
                    for rev in fn.revisions.values():
                        routable = fn.traffic.routable(rev.name)
                        decision = rev.autoscaler.decide(
                            now, len(rev.ready), rev.window, routable=routable
                        )
                        rev.last_decision = decision
                        if decision.desired != rev.desired:
                            rev.decisions.append(decision)
                        self._scale(rev, decision.desired, now, decision.reason)
                self._retire_zygotes()
                await asyncio.sleep(tick)
        except asyncio.CancelledError:
            log.info("autoscaler stopped: the platform is shutting down")
            raise

    def _retire_zygotes(self) -> None:
        """Stop zygotes that no rollout can need again (each holds its own imports in memory).

        ``mlfn rollout`` only moves traffic between a function's latest and previous
        revisions, so a generation none of those belong to, with no instance left, is done.
        """
        needed = {
            fn.revisions[name].generation
            for fn in self.functions.values()
            for name in {*fn.traffic.revisions[-2:], *fn.traffic.percent, fn.traffic.previous}
            if name is not None
        }
        for zygote in self.zygotes:
            if zygote.generation in needed or not zygote.alive:
                continue
            if any(rev.instances for rev in self._revisions_of(zygote.generation)):
                continue
            log.info("zygote %d retired: no revision of it can get traffic", zygote.generation)
            self._track(zygote.stop(self.settings.server.drain_seconds))

    def _scale(self, rev: Revision, desired: int, now: float, reason: str) -> None:
        if self._stopping:
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
                    self._terminate(inst)
            log.info("%s: scale %d -> %d (%s)", rev.name, len(live), desired, reason)

    def _spawn(self, rev: Revision, now: float) -> None:
        if not self.zygote_of(rev).alive:
            return  # restarting: the next reconcile spawns it
        inst = Instance(rev.next_instance_id(), rev, _free_port(), now)
        rev.instances[inst.id] = inst
        self._by_instance[inst.id] = inst
        self.zygote_of(rev).spawn(inst.id, rev.spec.name, inst.port, rev.model)

    def _terminate(self, inst: Instance) -> None:
        if inst.pid is not None:
            self.zygote_of(inst.revision).kill(inst.pid, signal.SIGTERM)

    def unreachable(self, inst: Instance) -> None:
        """The gateway cannot connect to ``inst``: route around it and make sure it stops."""
        if inst.state == "ready":
            log.warning("%s refuses connections; replacing it", inst.id)
            inst.revision.stop_routing(inst)
            self._terminate(inst)
            self._scale(inst.revision, inst.revision.desired, self.clock(), f"replace {inst.id}")

    def released(self, inst: Instance) -> None:
        """The gateway finished a request on a terminating instance: stop it now."""
        self._terminate(inst)

    # --- zygote events --------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        inst = self._by_instance.get(str(event.get("id")))
        if inst is None:
            return
        kind = event.get("ev")
        if kind == "spawned":
            inst.pid = int(event["pid"])
            if inst.state == "terminating":
                self._terminate(inst)
            else:
                self._track(self._readiness(inst))
        elif kind == "phase":
            if event["phase"] == "spawn":
                inst.t_spawn = float(event["t"])
            elif event["phase"] == "imports":
                inst.t_imports = float(event["t"])
        elif kind in ("exit", "error"):
            self._exited(inst, event)

    def _exited(self, inst: Instance, event: dict[str, Any]) -> None:
        rev = inst.revision
        was = inst.state
        inst.state = "exited"
        inst.exit_code = event.get("code")
        rev.remove(inst)
        self._by_instance.pop(inst.id, None)
        if was == "terminating" or self._stopping:
            return
        now = self.clock()
        reason = event.get("message") or f"exit code {inst.exit_code}"
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
        self._scale(rev, rev.desired, now, f"replace {inst.id}")

    async def _readiness(self, inst: Instance) -> None:
        ok = await probe_ready(inst.port, lambda: inst.state == "starting")
        if not ok:
            return
        inst.t_ready = self.clock()
        rev = inst.revision
        rev.mark_ready(inst)
        total = inst.t_ready - inst.t_request
        cold = ColdStart(inst.id, inst.t_ready, total, self._local_phases(inst))
        rev.cold_starts.append(cold)  # visible at once; the phases follow from /metrics
        phases = cold.phases = await self._phases(inst)
        self.metrics.observe_cold_start(rev.spec.name, total, phases)
        log.info(
            "%s ready in %.3fs (%s)",
            inst.id,
            total,
            ", ".join(f"{k} {v:.3f}s" for k, v in phases.items()),
        )

    @staticmethod
    def _local_phases(inst: Instance) -> dict[str, float]:
        assert inst.t_ready is not None
        spawn_at = inst.t_spawn or inst.t_request
        imports_at = inst.t_imports or spawn_at
        return {
            "spawn": spawn_at - inst.t_request,
            "imports": imports_at - spawn_at,
            "ready": inst.t_ready - imports_at,
        }

    async def _phases(self, inst: Instance) -> dict[str, float]:
        """Refine the phases with the server's own marks (seconds since its process start)."""
        assert inst.t_ready is not None
        phases = self._local_phases(inst)
        server = await self.scrape(inst)
        if "imports_done" in server and "model_loaded" in server:
            spawn_at = inst.t_spawn or inst.t_request
            return {
                "spawn": phases["spawn"],
                "imports": max(0.0, server["imports_done"]),
                "model_load": max(0.0, server["model_loaded"] - server["imports_done"]),
                "ready": max(0.0, inst.t_ready - spawn_at - server["model_loaded"]),
            }
        return phases

    _METRIC = re.compile(rb"^(mlfn_cold_start_seconds|mlfn_model_version)\{([^}]*)\} (\S+)$", re.M)

    async def scrape(self, inst: Instance) -> dict[str, float]:
        """Read an instance's cold-start phases and model version from its ``/metrics``."""
        try:
            status, body = await fetch(inst.port, "/metrics", timeout=0.5)
        except (OSError, TimeoutError, ValueError, IndexError):
            return {}
        if status != 200:
            return {}
        found: dict[str, float] = {}
        for name, labels, value in self._METRIC.findall(body):
            if name == b"mlfn_model_version":
                inst.model_version = inst.revision.model_version = str(int(float(value)))
            else:
                phase = re.search(rb'phase="([^"]+)"', labels)
                if phase:
                    found[phase.group(1).decode()] = float(value)
        return found

    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- new revisions from source changes ------------------------------------------------
    async def _watch_loop(self) -> None:
        period = self.settings.platform.watch_seconds
        log.info("watching the functions' source files every %.1fs", period)
        try:
            while True:
                await asyncio.sleep(period)
                changed = [
                    fn.name
                    for fn in self.functions.values()
                    if fn.source_file
                    and _file_hash(fn.source_file)
                    not in (None, fn.latest.source_hash, fn.rejected_hash)
                ]
                if changed:
                    log.info("source changed: %s; importing it in a new zygote", ", ".join(changed))
                    try:
                        await self._new_generation()
                    except Exception as err:
                        log.error(
                            "the changed source cannot be loaded, keeping the running revisions: %s",
                            err,
                        )
                        for name in changed:  # do not retry until the file changes again
                            fn = self.functions[name]
                            fn.rejected_hash = _file_hash(fn.source_file)
        except asyncio.CancelledError:
            log.info("source watch stopped: the platform is shutting down")
            raise

    # --- new revisions from new model versions --------------------------------------------
    async def _model_watch_loop(self) -> None:
        """Read each model's ``latest`` pointer (a few bytes) as often as its handle would."""
        log.info("watching the model store's latest pointers")
        failed: dict[str, str] = {}
        try:
            while True:
                polls = [
                    fn.latest.spec.model.poll_seconds
                    for fn in self.functions.values()
                    if fn.traffic.latest and fn.latest.spec.model is not None
                ]
                await asyncio.sleep(min([0.5, *polls]))
                for fn in list(self.functions.values()):
                    try:
                        if fn.traffic.latest:
                            self._check_model(fn)
                    except Exception as err:  # a bad read must not end the watch of every model
                        if failed.get(fn.name) != str(err):  # logged once per new error
                            log.error("%s: model watch failed (%s); retrying", fn.name, err)
                        failed[fn.name] = str(err)
                    else:
                        failed.pop(fn.name, None)
        except asyncio.CancelledError:
            log.info("model watch stopped: the platform is shutting down")
            raise

    def _check_model(self, fn: FunctionState) -> None:
        ref = fn.latest.spec.model
        if ref is None or self._stopping:
            return
        token = self.models.token(ref.name)
        if token is None or token == fn.model_token:
            return
        fn.model_token = token
        version = self.models.latest(ref.name)
        if version is None or version == fn.model_seen:
            return
        fn.model_seen = version
        if fn.latest.spec.rollout.strategy == "replace":
            log.info("model %s v%d published: %s hot-swaps it in place", ref.name, version, fn.name)
            return
        unpinned = [rev for rev in fn.revisions.values() if rev.model is None]
        if unpinned:  # the store was empty: the instances bootstrapped this first version
            for rev in unpinned:
                self._pin(rev, version)
            return
        base, now = fn.latest, self.clock()
        rev = Revision(
            f"{fn.name}-{len(fn.revisions) + 1:05d}",
            base.spec,
            base.source_hash,
            Policy.from_scaling(base.spec.scaling, self.settings.platform),
            base.generation,
            now,
            self.poke,
            model=version,
        )
        log.info("model %s v%d published: new revision of %s", ref.name, version, fn.name)
        self._add_revision(fn, rev, now)

    def _pin(self, rev: Revision, version: int) -> None:
        """Pin a revision created before its model had a version; re-fork its instances
        (they follow ``latest`` and would otherwise swap when the next version lands)."""
        rev.model, rev.model_version = version, str(version)
        live = rev.live
        for inst in live:
            rev.stop_routing(inst)
            if inst.in_flight == 0:
                self._terminate(inst)
        log.info("%s pinned to model v%d; %d instances re-forked", rev.name, version, len(live))
        self._scale(rev, rev.desired, self.clock(), f"pinned to model v{version}")

    def after_rollout(self, fn: FunctionState) -> None:
        """Traffic of ``fn`` moved: ``latest`` must not name a version that serves nothing.

        After a rollback (by the canary controller or ``mlfn rollout``), the store's pointer
        is moved back to the version of the revision that now holds most of the traffic,
        so that retraining compares with, and later revisions start from, what serves.
        """
        ref = fn.latest.spec.model
        if ref is None or not fn.traffic.percent:
            return
        served = {fn.revisions[name].model for name in fn.traffic.percent}
        pointer = self.models.latest(ref.name)
        if pointer is None or None in served or pointer in served:
            return
        main = max(fn.traffic.percent, key=fn.traffic.percent.__getitem__)
        back = fn.revisions[main].model
        assert back is not None
        log.warning(
            "model %s: latest names v%d, which no revision of %s serves after this rollout; "
            "pointing latest back at v%d (served by %s)",
            ref.name,
            pointer,
            fn.name,
            back,
            main,
        )
        if self.models.set_latest(ref.name, back):
            fn.model_seen, fn.model_token = back, self.models.token(ref.name)

    async def refresh_models(self) -> None:
        """Re-read the model version of every ready instance (for ``mlfn status``)."""
        ready = [
            i for fn in self.functions.values() for r in fn.revisions.values() for i in r.ready
        ]
        await asyncio.gather(*(self.scrape(i) for i in ready))

    def snapshot(self) -> dict[str, Any]:
        """Everything ``mlfn status`` shows about serving, as plain JSON values."""
        now = self.clock()
        out: dict[str, Any] = {}
        for fn in self.functions.values():
            out[fn.name] = {
                "kind": fn.latest.spec.kind,
                "latest": fn.traffic.latest,
                "traffic": dict(fn.traffic.describe()),
                "revisions": [
                    rev.describe(now, fn.traffic.percent.get(rev.name, 0))
                    for rev in fn.revisions.values()
                ],
            }
        return out
