"""Where the local canary controller's figures come from and where its decisions go.

- :func:`parse_metrics` / :func:`scrape`: per-revision requests, 5xx responses, the
  latency histogram and the model-quality gauge from the ``/metrics`` page every
  ``mlfn serve`` instance exports (the same series Flagger's ``MetricTemplate`` queries
  read on a cluster, see :mod:`knative.manifests.flagger`);
- :func:`local_reader`, :func:`local_splits`, :class:`LocalTarget`: a running ``mlfn dev``
  (its status and rollout API), and :func:`start_local`, which ``mlfn dev`` runs.

On a cluster, canary analysis is Flagger's job; nothing here talks to Knative.
"""

from __future__ import annotations

import logging
import math
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
    """Requests, 5xx responses, latency histogram and model quality from a ``/metrics`` page."""
    from prometheus_client.parser import text_string_to_metric_families

    requests = errors = 0
    buckets: dict[float, int] = {}
    quality: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mlfn_requests_total":
                n = int(sample.value)
                requests += n
                if str(sample.labels.get("code", "")).startswith("5"):
                    errors += n
            elif sample.name == "mlfn_request_duration_seconds_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0) + int(sample.value)
            elif sample.name == "mlfn_model_quality":
                name = str(sample.labels.get("metric", ""))
                quality[name] = min(quality.get(name, math.inf), float(sample.value))
    return RevisionStats(
        revision, requests, errors, tuple(sorted(buckets.items())), quality, answered=1
    )


def _add(a: RevisionStats, b: RevisionStats) -> RevisionStats:
    buckets = dict(a.buckets)
    for le, n in b.buckets:
        buckets[le] = buckets.get(le, 0) + n
    quality = dict(a.quality)
    for name, v in b.quality.items():
        quality[name] = min(quality.get(name, math.inf), v)
    return RevisionStats(
        a.revision,
        a.requests + b.requests,
        a.errors + b.errors,
        tuple(sorted(buckets.items())),
        quality,
        (a.answered or 0) + (b.answered or 0),
    )


def scrape(revision: str, urls: list[str], *, timeout_s: float = 5.0) -> RevisionStats:
    """Sum the ``/metrics`` of every instance of a revision (unreachable ones count zero;
    ``answered`` says how many were read)."""
    total = RevisionStats(revision, answered=0)
    for url in urls:
        try:
            resp = urllib3.request("GET", f"{url}/metrics", timeout=timeout_s, retries=False)
            one = parse_metrics(revision, resp.data.decode())
        except (urllib3.exceptions.HTTPError, ValueError) as err:
            log.debug("cannot scrape %s: %s", url, err)
            continue
        total = _add(total, one)
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
            gateway = int(rev.get("errors", 0))
            out[rev["name"]] = RevisionStats(
                rev["name"],
                seen.requests + gateway,
                seen.errors + gateway,
                seen.buckets,
                seen.quality,
                # no ready instance is a reading (of the gateway's errors); ready ones
                # that do not answer are not
                seen.answered if urls else None,
            )
        return out

    return read


def local_splits(
    status: Callable[[], dict[str, Any]], rollout_of: Callable[[str], Rollout | None]
) -> Finder:
    """Canaries on a running ``mlfn dev``: functions with ``strategy="canary"`` whose
    latest revision is not the one serving most traffic, beside one that serves, once the
    latest has a ready instance (Flagger too waits for the canary to be ready).

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
            if latest is None or traffic.get(latest, 0) >= 100:
                continue
            if traffic.get(latest, 0) == 0 and not rollout.iterations:
                continue  # rolled back (blue/green candidates start at 0 %)
            revs = {r.get("name"): r for r in fn.get("revisions") or []}
            instances = (revs.get(latest) or {}).get("instances") or []
            if latest in revs and not any(i.get("state") == "ready" for i in instances):
                continue  # as Flagger, the analysis starts once the candidate is ready
            others = [r for r, pct in traffic.items() if r != latest and pct > 0]
            if others:
                stable = max(others, key=traffic.__getitem__)
                out.append(Split(name, rollout, latest, stable, traffic.get(latest, 0)))
        return out

    return find


class LocalTarget:
    """Weights, promotion and rollback through the running ``mlfn dev`` (``/_mlfn/rollout``)."""

    def __init__(self, settings: LocalRoot) -> None:
        self.settings = settings

    def set_weight(self, function: str, percent: int) -> None:
        from localplatform.control import rollout

        rollout(self.settings, function, percent=percent, promote=False, rollback=False)

    def promote(self, function: str) -> None:
        from localplatform.control import rollout

        rollout(self.settings, function, percent=None, promote=True, rollback=False)

    def rollback(self, function: str) -> None:
        from localplatform.control import rollout

        rollout(self.settings, function, percent=None, promote=False, rollback=True)


def start_local(settings: LocalRoot, rollout_of: Callable[[str], Rollout | None]) -> CanaryDriver:
    """The canary controller of a running ``mlfn dev``: finds canary splits through its
    status API, reads each revision's counters, moves traffic through its rollout API.
    ``mlfn dev`` starts it once its gateway answers; stop it before the gateway.
    """
    from localplatform.control import status

    driver = CanaryDriver(
        local_reader(settings),
        LocalTarget(settings),
        tick_seconds=settings.loop.canary_tick_seconds,
        interval_seconds=settings.loop.canary_interval_seconds,
        find=local_splits(lambda: status(settings), rollout_of),
    )
    return driver.start()
