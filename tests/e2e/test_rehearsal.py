"""A cluster rehearsal: what ``mlfn render`` produces, run as processes on one PostgreSQL.

Two ``predict`` replicas, ``preprocess`` and two ``retrain`` replicas start with their
rendered command and environment (the database URL from the Secret, each pod its own
``/tmp``); mlfn's dispatchers play Knative's Kafka source and broker. The model event
reaches one ``predict`` replica only, as a Trigger delivers to one pod; the other must
find the new version in the shared store by itself.
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from eventing.ping import PingSources, ping_targets
from eventing.plane import EventingPlane
from eventing.producer import EventProducer
from knative.manifests import RenderOptions, render
from knative.render import container_env
from mlfn.settings import Settings
from runtime.registry import discover
from runtime.stores import close_all, open_stores
from tests.e2e.harness import digits_rows
from tests.e2e.rehearsal import Pod, ServiceProxy, pod, wait_healthy_pod
from tests.fixtures.servers import http_call
from tests.fixtures.waiting import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
]  # slow: five server processes; ~40 s on an idle 2-core machine

PACKAGE = "tests.e2e.loopfns"
EVERY_ROWS = 150  # fewer rows train a candidate that the gate rejects against v1


@pytest.fixture
def cluster(tmp_path: Path, database_url: str, bootstrap: str) -> Iterator[dict[str, object]]:
    raw = f"rehearsal-raw-{uuid.uuid4().hex[:8]}"
    namespace = f"rh-{uuid.uuid4().hex[:6]}"
    os.environ["MLFN_E2E_RAW_TOPIC"] = raw
    os.environ["MLFN_E2E_EVERY_ROWS"] = str(EVERY_ROWS)
    os.environ["MLFN_E2E_EVERY_SECONDS"] = "3600"  # a PingSource; it never fires by itself here
    module = f"{PACKAGE}.pipeline"
    if module in sys.modules:  # the raw topic and policy are read at import
        importlib.reload(sys.modules[module])
    settings = Settings().updated(common={"functions_package": PACKAGE, "namespace": namespace})
    specs = [fn.spec for fn in discover(PACKAGE)]
    extra = {
        "MLFN_E2E_RAW_TOPIC": raw,
        "MLFN_E2E_EVERY_ROWS": str(EVERY_ROWS),
        "MLFN_E2E_EVERY_SECONDS": "3600",
    }
    opts = RenderOptions(
        namespace=namespace,
        env={**container_env(settings), **extra},
        database_secret="mlfn-database",
    )
    services = {
        o["metadata"]["name"]: o for o in render(specs, opts).all() if o["kind"] == "Service"
    }
    secrets = {("mlfn-database", "url"): database_url}
    cluster_env = {"MLFN_BOOTSTRAP_SERVERS": bootstrap}  # the cluster's Kafka, here
    pods: list[Pod] = []

    def start(name: str) -> Pod:
        p = pod(services[name], secrets, tmp_path, overrides=cluster_env)
        pods.append(p)
        return p

    retrain_service = ServiceProxy()
    plane: EventingPlane | None = None
    try:
        predicts = [start("predict"), start("predict")]
        preprocess = start("preprocess")
        retrains = [start("retrain"), start("retrain")]
        for p in [*predicts, preprocess, *retrains]:
            wait_healthy_pod(p, 90)
        retrain_service.backends = [r.url for r in retrains]
        sinks = {
            "predict": predicts[0].url,  # the Trigger reaches ONE predict pod
            "preprocess": preprocess.url,
            "retrain": retrain_service.url,
        }
        plane = EventingPlane(
            settings.updated(eventing={"partitions": 2}),
            specs,
            lambda name: sinks[name],
            bootstrap=bootstrap,
        )
        plane.start(wait_assigned_s=60)
        yield {
            "predicts": predicts,
            "retrains": retrains,
            "proxy": retrain_service,
            "raw": raw,
            "bootstrap": bootstrap,
            "stores": open_stores(Settings().updated(models={"database_url": database_url})),
            "start": start,
            "specs": specs,
            "namespace": namespace,
            "url": database_url,
        }
    finally:
        if plane is not None:
            plane.stop()
        retrain_service.stop()
        for p in pods:
            p.stop()
        close_all()


def _version(p: Pod) -> int:
    from sklearn.datasets import load_digits

    rows = (np.asarray(load_digits().data[:4]) / 16.0).tolist()
    reply = http_call(p.url, "POST", "/", {"instances": rows}, timeout=10)
    assert reply.status == 200, reply.body
    return int(reply.json()["model_version"])


def _produce(bootstrap: str, topic: str, start: int, stop: int) -> None:
    producer = EventProducer(bootstrap, partitions=2)
    try:
        for record in digits_rows(start, stop):
            producer.send(topic, record)
        producer.flush()
    finally:
        producer.close()


def _no_overlap(stores: object) -> list[tuple[float, float]]:
    spans = []
    for v in stores.models.versions("digits"):  # type: ignore[attr-defined]
        began = v.extra.get("training_started_at")
        if began is not None:
            spans.append((float(began), v.created.timestamp()))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"two trainings overlapped: {spans}"
    return spans


def test_records_in_one_truth_out_and_a_killed_retrain_loses_no_row(
    cluster: dict[str, object],
) -> None:
    predicts: list[Pod] = cluster["predicts"]  # type: ignore[assignment]
    retrains: list[Pod] = cluster["retrains"]  # type: ignore[assignment]
    stores = cluster["stores"]
    models, dataset = stores.models, stores.datasets.open("digits")  # type: ignore[attr-defined]
    for p in predicts:
        p.server.wait_ready(90)
    # two replicas started together on an empty store: ONE bootstrap version between them
    assert [v.version for v in models.versions("digits")] == [1]
    assert {_version(p) for p in predicts} == {1}

    _produce(cluster["bootstrap"], cluster["raw"], 0, 2 * EVERY_ROWS)  # type: ignore[arg-type]
    wait_for(lambda: models.latest("digits") >= 2, 150, "a training to publish v2")
    latest = models.latest("digits")
    # both replicas serve it: one by the event, the other by polling the shared store
    wait_for(lambda: {_version(p) for p in predicts} == {latest}, 30, "both replicas on v2")

    # SIGKILL one retrain replica mid-stream; its peer and the dispatcher's retries cover
    _produce(cluster["bootstrap"], cluster["raw"], 2 * EVERY_ROWS, 4 * EVERY_ROWS)  # type: ignore[arg-type]
    wait_for(lambda: dataset.count() > 2 * EVERY_ROWS + 20, 60, "rows of the second stream")
    retrains[0].kill()
    wait_for(lambda: dataset.count() == 4 * EVERY_ROWS, 90, "every row stored exactly once")
    assert _no_overlap(stores)  # two retrain replicas never trained at once

    # a replica scaled from zero replaces it; an hour later the PingSource wakes it: it
    # knows the time trigger and the untrained rows from the stores alone
    fresh: Pod = cluster["start"]("retrain")  # type: ignore[operator]
    wait_healthy_pod(fresh, 90)
    with psycopg.connect(cluster["url"]) as conn:  # type: ignore[arg-type]
        conn.execute("UPDATE mlfn_retrain_state SET last_started = now() - interval '2 hours'")
    wait_for(lambda: not _training_now(cluster["url"]), 60, "the surviving replica to finish")
    (target,) = ping_targets(cluster["specs"], lambda _: fresh.url, cluster["namespace"])  # type: ignore[arg-type]
    pings = PingSources([target])
    try:
        assert pings.ping(target).status == 204
    finally:
        pings.stop()
    served = models.info("digits")
    assert served.data is not None and served.data.last_seq == 4 * EVERY_ROWS
    assert dataset.count() == 4 * EVERY_ROWS
    assert _no_overlap(stores)
    final = models.latest("digits")
    wait_for(lambda: {_version(p) for p in predicts} == {final}, 30, "both on the final version")


def _training_now(url: str) -> bool:
    """Whether a retrain replica holds the model's single-flight lock."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        ).fetchone()
    return bool(row and row[0])
