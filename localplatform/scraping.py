"""Scraping the instances: readiness, the phases of each cold start, and ``/metrics``.

:class:`Scraper` waits for a spawned instance's ``/readyz`` (or its final refusal: a model
that failed to load), then records its cold start,
first with the platform's own marks (spawn, imports, ready) and then refined with the
server's (``mlfn_cold_start_seconds`` on its ``/metrics``: imports done, model loaded).
:meth:`Scraper.scrape` also reads the model version an instance serves.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from localplatform.instances import fetch, probe_ready
from localplatform.metrics import PlatformMetrics
from localplatform.revisions import ColdStart, Instance

__all__ = ["Scraper"]

log = logging.getLogger(__name__)


class Scraper:
    """Readiness probes and ``/metrics`` reads of instances; runs on the event loop."""

    _METRIC = re.compile(rb"^(mlfn_cold_start_seconds|mlfn_model_version)\{([^}]*)\} (\S+)$", re.M)

    def __init__(self, clock: Callable[[], float], metrics: PlatformMetrics) -> None:
        self.clock = clock
        self.metrics = metrics

    async def readiness(self, inst: Instance) -> str | None:
        """Wait until ``inst`` is ready, then record its cold start.

        Returns:
            None, or why ``inst`` cannot become ready (its server said so on ``/readyz``).
            An instance that stops starting (it exited, or is being stopped) is left alone.
        """
        ok, failure = await probe_ready(inst.port, lambda: inst.state == "starting")
        if not ok:
            return failure
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
        return None

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
