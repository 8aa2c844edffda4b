"""The serving layer: functions, their revisions, the autoscaler loop and the zygotes.

:class:`Serving` is the one object the gateway, ``mlfn dev``, the metrics and the control
API use; it composes the jobs, each in its own module:

- :mod:`localplatform.reconciler`: the functions, a zygote per generation of their
  source, a revision per function and source hash, and the instances (spawn, or drain
  then stop; a crashed instance or a lost zygote is replaced).
- :mod:`localplatform.autoscaling`: every revision's autoscaler once per tick, applied by
  the reconciler, and the poke that scales a revision from zero when a request is held.
- :mod:`localplatform.watchers`: new revisions from saved source changes and from new
  model versions (rollout ``canary`` pins a new revision to the version, ``replace``
  hot-swaps it in the running instances).
- :mod:`localplatform.scraping`: readiness, the phases of each cold start, and the
  instances' ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from localplatform.autoscaling import AutoscaleLoop
from localplatform.instances import ZygoteClient
from localplatform.metrics import PlatformMetrics
from localplatform.models import ModelPointers
from localplatform.reconciler import FunctionState, Reconciler
from localplatform.revisions import Instance, Revision
from localplatform.scraping import Scraper
from localplatform.settings import LocalRoot
from localplatform.watchers import ModelWatch, SourceWatch

__all__ = ["FunctionState", "Serving"]

log = logging.getLogger(__name__)


class Serving:
    """All functions served by ``mlfn dev``; every method runs on the event loop."""

    def __init__(self, settings: LocalRoot, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.functions: dict[str, FunctionState] = {}
        self.metrics = PlatformMetrics(self)  # reads ``functions`` once now, then per scrape
        self.models = ModelPointers(settings)
        self.scraper = Scraper(clock, self.metrics)
        self.reconciler = Reconciler(
            settings,
            clock,
            self.functions,
            self.metrics,
            self.models,
            self.poke,
            self.scraper.readiness,
        )
        self.autoscale = AutoscaleLoop(self.reconciler)
        self.source_watch = SourceWatch(self.reconciler)
        self.model_watch = ModelWatch(self.reconciler, self.models, self.scraper.scrape)

    @property
    def zygotes(self) -> list[ZygoteClient]:
        return self.reconciler.zygotes

    # --- start and stop -------------------------------------------------------------------
    async def start(self) -> None:
        """Start the first zygote, one revision per function, and the background loops."""
        await self.reconciler.new_generation()
        self.autoscale.start()
        if self.settings.platform.watch_seconds > 0:
            self.source_watch.start()
        self.model_watch.start()

    async def stop(self) -> None:
        """Stop the loops, then every instance (drained by SIGTERM) and every zygote."""
        self.reconciler.stopping = True
        await self.autoscale.stop()
        await self.source_watch.stop()
        await self.model_watch.stop()
        await self.reconciler.stop()
        log.info("serving stopped: every instance and zygote has exited")

    # --- what the gateway and the control API call ----------------------------------------
    def zygote_of(self, rev: Revision) -> ZygoteClient:
        return self.reconciler.zygote_of(rev)

    def poke(self, rev: Revision) -> None:
        """A request is held at ``rev``: scale from zero now, as the activator pokes the KPA."""
        self.autoscale.poke(rev)

    def unreachable(self, inst: Instance) -> None:
        """The gateway cannot connect to ``inst``: route around it and make sure it stops."""
        self.reconciler.unreachable(inst)

    def released(self, inst: Instance) -> None:
        """The gateway finished a request on a terminating instance: stop it now."""
        self.reconciler.terminate(inst)

    async def scrape(self, inst: Instance) -> dict[str, float]:
        """Read an instance's cold-start phases and model version from its ``/metrics``."""
        return await self.scraper.scrape(inst)

    def after_rollout(self, fn: FunctionState) -> None:
        """Traffic of ``fn`` moved: ``latest`` must not name a version that serves nothing."""
        self.model_watch.after_rollout(fn)

    async def refresh_models(self) -> None:
        """Re-read the model version of every ready instance (for ``mlfn status``)."""
        await self.model_watch.refresh_models()

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
