"""Where the canary controller's figures come from and where its decisions go.

- :func:`parse_metrics` / :func:`scrape`: per-revision requests, 5xx responses and latency
  from the ``/metrics`` page every ``mlfn serve`` instance exports;
- :func:`local_reader`, :func:`local_splits`, :class:`LocalTarget`: a running ``mlfn dev``
  (its status and rollout API), and :func:`start_local`, which ``mlfn dev`` runs.

On a cluster, canary analysis is Flagger's job; nothing here talks to Knative.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import urllib3

from localplatform.canary import CanaryDriver, Finder, Reader, RevisionStats, Split
from localplatform.settings import LocalRoot
from runtime.spec import Rollout

__all__ = [
    "LocalTarget",
    "local_reader",
    "local_splits",
    "parse_metrics",
    "scrape",
    "start_local",
]

log = logging.getLogger("localplatform.canary")


def parse_metrics(revision: str, text: str) -> RevisionStats:
    """Requests, 5xx responses and latency sum from an ``mlfn serve`` ``/metrics`` page."""
    from prometheus_client.parser import text_string_to_metric_families

    requests = errors = 0
    latency = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mlfn_requests_total":
                n = int(sample.value)
                requests += n
                if str(sample.labels.get("code", "")).startswith("5"):
                    errors += n
            elif sample.name == "mlfn_request_duration_seconds_sum":
                latency += float(sample.value)
    return RevisionStats(revision, requests, errors, latency)


def scrape(revision: str, urls: list[str], *, timeout_s: float = 2.0) -> RevisionStats:
    """Sum the ``/metrics`` of every instance of a revision (unreachable ones count zero)."""
    total = RevisionStats(revision)
    for url in urls:
        try:
            resp = urllib3.request("GET", f"{url}/metrics", timeout=timeout_s, retries=False)
            one = parse_metrics(revision, resp.data.decode())
        except (urllib3.exceptions.HTTPError, ValueError) as err:
            log.debug("cannot scrape %s: %s", url, err)
            continue
        total = RevisionStats(
            revision,
            total.requests + one.requests,
            total.errors + one.errors,
            total.latency_sum + one.latency_sum,
        )
    return total


def local_reader(settings: LocalRoot) -> Reader:
    """Per-revision counters of a running ``mlfn dev``: its instances' ``/metrics``, plus
    the errors the gateway answered itself (502/504) that no instance saw."""
    from localplatform.control import status

    def read(function: str) -> dict[str, RevisionStats]:
        fn = status(settings).get("functions", {}).get(function)
        if fn is None:
            raise ValueError(f"no function {function!r} on the local platform")
        out = {}
        for rev in fn["revisions"]:
            urls = [
                f"http://127.0.0.1:{i['port']}"
                for i in rev.get("instances", [])
                if i.get("state") == "ready" and i.get("port")
            ]
            seen = scrape(rev["name"], urls)
            out[rev["name"]] = RevisionStats(
                rev["name"],
                seen.requests + int(rev.get("errors", 0)),
                seen.errors + int(rev.get("errors", 0)),
                seen.latency_sum,
            )
        return out

    return read


def local_splits(
    status: Callable[[], dict[str, Any]], rollout_of: Callable[[str], Rollout | None]
) -> Finder:
    """Canaries on a running ``mlfn dev``: functions with ``strategy="canary"`` whose
    latest revision holds a share of traffic strictly between 0 and 100%.

    Args:
        status: the platform's status JSON (``localplatform.control.status``).
        rollout_of: a function's current rollout policy (None: unknown function).
    """

    def find() -> list[Split]:
        out = []
        for name, fn in (status().get("functions") or {}).items():
            rollout = rollout_of(name)
            if rollout is None or rollout.strategy != "canary":
                continue
            traffic: dict[str, int] = dict(fn.get("traffic") or {})
            latest = fn.get("latest")
            if latest is None or not 0 < traffic.get(latest, 0) < 100:
                continue
            others = [r for r, pct in traffic.items() if r != latest and pct > 0]
            if others:
                out.append(Split(name, rollout, latest, others[-1]))
        return out

    return find


class LocalTarget:
    """Promote / roll back through the running ``mlfn dev`` (``/_mlfn/rollout``)."""

    def __init__(self, settings: LocalRoot) -> None:
        self.settings = settings

    def promote(self, function: str) -> None:
        from localplatform.control import rollout

        rollout(self.settings, function, percent=None, promote=True, rollback=False)

    def rollback(self, function: str) -> None:
        from localplatform.control import rollout

        rollout(self.settings, function, percent=None, promote=False, rollback=True)


def start_local(settings: LocalRoot, rollout_of: Callable[[str], Rollout | None]) -> CanaryDriver:
    """The canary controller of a running ``mlfn dev``: finds canary splits through its
    status API, reads each revision's counters, promotes or rolls back through its
    rollout API. ``mlfn dev`` starts it once its gateway answers; stop it before the gateway.
    """
    from localplatform.control import status

    driver = CanaryDriver(
        local_reader(settings),
        LocalTarget(settings),
        tick_seconds=settings.loop.canary_tick_seconds,
        find=local_splits(lambda: status(settings), rollout_of),
    )
    return driver.start()
