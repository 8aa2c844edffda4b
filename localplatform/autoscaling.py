"""The autoscale loop: every revision's autoscaler once per tick, and pokes from zero.

:class:`AutoscaleLoop` asks each revision's :class:`~localplatform.autoscaler.Autoscaler`
for a decision every ``platform.tick_seconds`` and has the reconciler apply it; a request
held at a revision with no instance pokes it at once, as Knative's activator pokes the
KPA. After each tick it retires the zygotes no revision can need again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from localplatform.reconciler import Reconciler
from localplatform.revisions import Revision

__all__ = ["AutoscaleLoop"]

log = logging.getLogger(__name__)


class AutoscaleLoop:
    """The ticks of the autoscaler, with an explicit :meth:`start` and :meth:`stop`."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="autoscaler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def poke(self, rev: Revision) -> None:
        """A request is held at ``rev``: scale from zero now, as the activator pokes the KPA."""
        now = self.reconciler.clock()
        decision = rev.autoscaler.poke(now, len(rev.ready), max(rev.waiting, 1))
        if decision is not None and not rev.live:
            rev.decisions.append(decision)
            rev.last_decision = decision
            self.reconciler.scale(rev, max(decision.desired, 1), now, decision.reason)

    async def _loop(self) -> None:
        reconciler = self.reconciler
        tick = reconciler.settings.platform.tick_seconds
        log.info("autoscaler started (tick %.2fs)", tick)
        try:
            while True:
                now = reconciler.clock()
                for fn in reconciler.functions.values():
                    for rev in fn.revisions.values():
                        routable = fn.traffic.routable(rev.name)
                        decision = rev.autoscaler.decide(
                            now, len(rev.ready), rev.window, routable=routable
                        )
                        rev.last_decision = decision
                        if decision.desired != rev.desired:
                            rev.decisions.append(decision)
                        reconciler.scale(rev, decision.desired, now, decision.reason)
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
        reconciler = self.reconciler
        needed = {
            fn.revisions[name].generation
            for fn in reconciler.functions.values()
            for name in {*fn.traffic.revisions[-2:], *fn.traffic.percent, fn.traffic.previous}
            if name is not None
        }
        for zygote in reconciler.zygotes:
            if zygote.generation in needed or not zygote.alive:
                continue
            if any(rev.instances for rev in reconciler.revisions_of(zygote.generation)):
                continue
            log.info("zygote %d retired: no revision of it can get traffic", zygote.generation)
            reconciler.track(zygote.stop(reconciler.settings.server.drain_seconds))
