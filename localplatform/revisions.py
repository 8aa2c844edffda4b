"""Revisions and their instances: the state the gateway and the autoscaler share.

A :class:`Revision` is one version of a function's code (a source hash) and, for an
inference function with a model, of its model (the version its instances are pinned to),
with its own autoscaler, its instances, and an activator queue: a request that finds no instance
with room waits here (it is not failed) until one is ready, as Knative's activator holds
requests while a revision scales from zero.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from localplatform.autoscaler import Autoscaler, ConcurrencyWindow, Decision, Policy
from localplatform.proxy import UpstreamPool
from runtime.spec import FunctionSpec

__all__ = ["ColdStart", "Instance", "Revision", "StartFailure"]

State = Literal["starting", "ready", "terminating", "exited"]

START_FAILURES_BEFORE_ERROR = 3


class StartFailure(Exception):
    """Instances of a revision keep failing to start; held requests get this error."""


@dataclass
class ColdStart:
    """Phases of one instance start, in seconds (Knative has no such metric)."""

    instance: str
    at: float
    total: float
    phases: dict[str, float]


@dataclass(eq=False)
class Instance:
    """One process serving one revision on a loopback port."""

    id: str
    revision: Revision
    port: int
    t_request: float
    pid: int | None = None
    state: State = "starting"
    in_flight: int = 0
    t_spawn: float | None = None
    t_imports: float | None = None
    t_ready: float | None = None
    model_version: str | None = None
    exit_code: int | None = None
    grpc_port: int | None = None
    failure: str | None = None  # why it cannot become ready, as its server said
    pool: UpstreamPool = field(init=False)

    def __post_init__(self) -> None:
        self.pool = UpstreamPool("127.0.0.1", self.port)

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "port": self.port,
            "state": self.state,
            "in_flight": self.in_flight,
            "age_s": round(now - self.t_request, 1),
            "model_version": self.model_version,
        }


class Revision:
    """One revision: instances, concurrency window, autoscaler, activator queue."""

    def __init__(
        self,
        name: str,
        spec: FunctionSpec,
        source_hash: str,
        policy: Policy,
        generation: int,
        now: float,
        poke: Callable[[Revision], None],
        model: int | None = None,
    ) -> None:
        self.name = name
        self.model = model  # the model version its instances are pinned to (None: latest)
        self.spec = spec
        self.source_hash = source_hash
        self.generation = generation
        self.created = now
        self.policy = policy
        self.autoscaler = Autoscaler(policy, now)
        self.window = ConcurrencyWindow(now, horizon=max(120.0, policy.stable_window * 2))
        self.instances: dict[str, Instance] = {}
        self.ready: list[Instance] = []
        self.in_flight = 0
        self.desired = 0
        self.decisions: deque[Decision] = deque(maxlen=12)
        self.last_decision: Decision | None = None
        self.cold_starts: deque[ColdStart] = deque(maxlen=12)
        self.start_failures = 0
        self.last_failure: str | None = None
        self.next_spawn_at = 0.0
        self.model_version: str | None = None if model is None else str(model)  # as last seen
        self.served = 0
        self.errors = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._poke = poke
        self._seq = 0

    def next_instance_id(self) -> str:
        self._seq += 1
        return f"{self.name}-{self._seq}"

    @property
    def live(self) -> list[Instance]:
        """Instances starting or ready (not terminating): what counts toward the scale."""
        return [i for i in self.instances.values() if i.state in ("starting", "ready")]

    # --- the hot path -----------------------------------------------------------------
    def begin(self, now: float) -> None:
        self.in_flight += 1
        self.window.record(now, self.in_flight)

    def end(self, now: float) -> None:
        self.in_flight -= 1
        self.window.record(now, self.in_flight)

    def acquire(self) -> Instance | None:
        """The ready instance with the fewest requests in flight and room for one more."""
        cc = self.policy.container_concurrency
        best: Instance | None = None
        for inst in self.ready:
            if cc and inst.in_flight >= cc:
                continue
            if best is None or inst.in_flight < best.in_flight:
                best = inst
        if best is not None:
            best.in_flight += 1
        return best

    async def wait_instance(self) -> Instance:
        """Hold the request until an instance has room (the caller bounds the wait).

        Raises:
            StartFailure: instances keep failing to start.
        """
        loop = asyncio.get_running_loop()
        while True:
            inst = self.acquire()
            if inst is not None:
                return inst
            if self.start_failures >= START_FAILURES_BEFORE_ERROR:
                raise StartFailure(self._failure_message())
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            self._poke(self)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()

    def release(self, inst: Instance) -> Instance | None:
        """A request on ``inst`` ended; return the instance if it should now be stopped."""
        inst.in_flight -= 1
        if self._waiters and self.policy.container_concurrency:
            self.wake(1)
        if inst.state == "terminating" and inst.in_flight == 0:
            return inst
        return None

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def wake(self, n: int | None = None) -> None:
        """Let ``n`` held requests (all when None) try to take an instance again."""
        while self._waiters and (n is None or n > 0):
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                if n is not None:
                    n -= 1

    def fail_waiters(self) -> None:
        err = StartFailure(self._failure_message())
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(err)

    def _failure_message(self) -> str:
        return (
            f"instances of revision {self.name} failed to start {self.start_failures} times "
            f"in a row (last: {self.last_failure}); see the log lines prefixed "
            f"'{self.name}-' and fix the function, then save it to create a new revision"
        )

    def mark_ready(self, inst: Instance) -> None:
        inst.state = "ready"
        self.ready.append(inst)
        self.start_failures = 0
        self.wake()

    def remove(self, inst: Instance) -> None:
        if inst in self.ready:
            self.ready.remove(inst)
        self.instances.pop(inst.id, None)
        inst.pool.close()

    def stop_routing(self, inst: Instance) -> None:
        """No new requests go to ``inst``; it stops once its in-flight ones are done."""
        inst.state = "terminating"
        if inst in self.ready:
            self.ready.remove(inst)

    def describe(self, now: float, percent: int) -> dict[str, Any]:
        last = self.last_decision
        return {
            "name": self.name,
            "source_hash": self.source_hash,
            "model": self.model,
            "traffic_percent": percent,
            "desired": self.desired,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "served": self.served,
            "errors": self.errors,
            "observed": {
                "stable": round(last.stable, 3) if last else 0.0,
                "panic": round(last.panic, 3) if last else 0.0,
                "panicking": last.panicking if last else False,
                "reason": last.reason if last else "",
            },
            "instances": [i.describe(now) for i in self.instances.values()],
            "decisions": [
                {
                    "ago_s": round(now - d.at, 1),
                    "desired": d.desired,
                    "ready": d.ready,
                    "stable": round(d.stable, 3),
                    "panic": round(d.panic, 3),
                    "reason": d.reason,
                }
                for d in reversed(self.decisions)
            ],
            "cold_starts": [
                {
                    "instance": c.instance,
                    "ago_s": round(now - c.at, 1),
                    "total_s": round(c.total, 4),
                    "phases_s": {k: round(v, 4) for k, v in c.phases.items()},
                }
                for c in reversed(self.cold_starts)
            ],
            "start_failures": self.start_failures,
            "last_failure": self.last_failure,
            "model_versions": sorted(
                {i.model_version for i in self.instances.values() if i.model_version}
            )
            or ([self.model_version] if self.model_version else []),
        }
