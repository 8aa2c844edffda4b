"""The watchers: new revisions from changed source files and from new model versions.

:class:`SourceWatch` hashes the functions' source files every ``platform.watch_seconds``;
a saved change is imported in a new zygote generation, which makes a new revision of each
function it changed (a change that cannot be imported keeps the running revisions).

:class:`ModelWatch` reads the model store's ``latest`` pointer of every function with a
model. With rollout strategy ``canary`` a new version makes a new revision whose instances
are pinned to it (:mod:`localplatform.models`) with ``rollout.step_weight`` % of the
traffic (blue/green, ``rollout.iterations``: none), which :mod:`localplatform.canary` then
moves as Flagger would. With ``replace`` the running instances hot-swap the new version in place, as pods do on a
cluster (no cold start, and a version that fails to load never takes traffic from the one
that serves); the revision's status follows the version its instances report.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from localplatform.autoscaler import Policy
from localplatform.models import ModelPointers
from localplatform.reconciler import FunctionState, Reconciler
from localplatform.revisions import Instance, Revision

__all__ = ["ModelWatch", "SourceWatch"]

log = logging.getLogger(__name__)


def _file_hash(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    except OSError:
        return None


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class SourceWatch:
    """New revisions from source changes, with an explicit :meth:`start` and :meth:`stop`."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="source-watch")

    async def stop(self) -> None:
        await _cancel(self._task)

    async def _loop(self) -> None:
        period = self.reconciler.settings.platform.watch_seconds
        log.info("watching the functions' source files every %.1fs", period)
        try:
            while True:
                await asyncio.sleep(period)
                functions = self.reconciler.functions
                changed = [
                    fn.name
                    for fn in functions.values()
                    if fn.source_file
                    and _file_hash(fn.source_file)
                    not in (None, fn.latest.source_hash, fn.rejected_hash)
                ]
                if changed:
                    log.info("source changed: %s; importing it in a new zygote", ", ".join(changed))
                    try:
                        await self.reconciler.new_generation()
                    except Exception as err:
                        log.error(
                            "the changed source cannot be loaded, keeping the running revisions: %s",
                            err,
                        )
                        for name in changed:  # do not retry until the file changes again
                            fn = functions[name]
                            fn.rejected_hash = _file_hash(fn.source_file)
        except asyncio.CancelledError:
            log.info("source watch stopped: the platform is shutting down")
            raise


class ModelWatch:
    """New revisions from new model versions, with an explicit :meth:`start` and :meth:`stop`.

    ``scrape`` reads an instance's ``/metrics`` (its model version among them).
    """

    def __init__(
        self,
        reconciler: Reconciler,
        models: ModelPointers,
        scrape: Callable[[Instance], Awaitable[object]],
    ) -> None:
        self.reconciler = reconciler
        self.models = models
        self.scrape = scrape
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="model-watch")

    async def stop(self) -> None:
        await _cancel(self._task)

    async def _loop(self) -> None:
        """Read each model's ``latest`` pointer (a few bytes) as often as its handle would."""
        log.info("watching the model store's latest pointers")
        functions = self.reconciler.functions
        failed: dict[str, str] = {}
        try:
            while True:
                polls = [
                    fn.latest.spec.model.poll_seconds
                    for fn in functions.values()
                    if fn.traffic.latest and fn.latest.spec.model is not None
                ]
                await asyncio.sleep(min([0.5, *polls]))
                for fn in list(functions.values()):
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
        reconciler = self.reconciler
        ref = fn.latest.spec.model
        if ref is None or reconciler.stopping:
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
        base, now = fn.latest, reconciler.clock()
        rev = Revision(
            f"{fn.name}-{len(fn.revisions) + 1:05d}",
            base.spec,
            base.source_hash,
            Policy.from_scaling(base.spec.scaling, reconciler.settings.platform),
            base.generation,
            now,
            reconciler.poke,
            model=version,
        )
        log.info("model %s v%d published: new revision of %s", ref.name, version, fn.name)
        reconciler.add_revision(fn, rev, now)

    def _pin(self, rev: Revision, version: int) -> None:
        """Pin a revision created before its model had a version; re-fork its instances
        (they follow ``latest`` and would otherwise swap when the next version lands)."""
        rev.model, rev.model_version = version, str(version)
        live = rev.live
        for inst in live:
            rev.stop_routing(inst)
            if inst.in_flight == 0:
                self.reconciler.terminate(inst)
        log.info("%s pinned to model v%d; %d instances re-forked", rev.name, version, len(live))
        self.reconciler.scale(
            rev, rev.desired, self.reconciler.clock(), f"pinned to model v{version}"
        )

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
            i
            for fn in self.reconciler.functions.values()
            for r in fn.revisions.values()
            for i in r.ready
        ]
        await asyncio.gather(*(self.scrape(i) for i in ready))
