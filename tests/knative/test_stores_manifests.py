"""The cluster gets the store: the database Secret, egress to it, and the PingSource."""

from __future__ import annotations

import json

import pytest

from knative.manifests import RenderOptions, render
from knative.manifests.ping import cron_schedule
from runtime.registry import discover
from tests.knative.conftest import find
from tests.knative.schemas import CRDS, validate

pytestmark = pytest.mark.unit

OPTS = RenderOptions(
    namespace="ml", database_secret="mlfn-database", database_namespace="pg", database_port=5433
)


def _pipeline() -> list[dict]:  # type: ignore[type-arg]
    return render([fn.spec for fn in discover("functions")], OPTS).all()


def _env(obj: dict) -> dict[str, object]:  # type: ignore[type-arg]
    container = obj["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_functions_with_stores_read_the_url_from_the_secret() -> None:
    objects = _pipeline()
    ref = {"secretKeyRef": {"name": "mlfn-database", "key": "url"}}
    assert _env(find(objects, "Service", "predict"))["MLFN_DATABASE_URL"] == ref
    assert _env(find(objects, "Service", "retrain"))["MLFN_DATABASE_URL"] == ref
    assert "MLFN_DATABASE_URL" not in _env(find(objects, "Service", "preprocess"))
    without = render([fn.spec for fn in discover("functions")], RenderOptions(namespace="ml"))
    assert "MLFN_DATABASE_URL" not in _env(find(without.all(), "Service", "predict"))
    assert "MLFN_ARTIFACT_URL" not in _env(find(objects, "Service", "predict"))


def test_an_object_store_gets_its_url_its_credentials_and_egress() -> None:
    opts = RenderOptions(
        namespace="ml",
        database_secret="mlfn-database",
        artifact_url="s3://models/mlfn",
        artifact_endpoint_url="http://minio.storage:9000",
        artifact_secret="mlfn-artifacts",
    )
    objects = render([fn.spec for fn in discover("functions")], opts).all()
    env = _env(find(objects, "Service", "predict"))
    assert env["MLFN_ARTIFACT_URL"] == "s3://models/mlfn"
    assert env["MLFN_ARTIFACT_ENDPOINT_URL"] == "http://minio.storage:9000"
    assert env["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "mlfn-artifacts", "key": "access_key_id"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "mlfn-artifacts", "key": "secret_access_key"}
    }
    assert "MLFN_ARTIFACT_URL" not in _env(find(objects, "Service", "preprocess"))
    egress = find(objects, "NetworkPolicy", "mlfn-allow-functions-egress")["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 9000}]} in egress


def test_the_egress_policy_reaches_the_database_namespace() -> None:
    policy = find(_pipeline(), "NetworkPolicy", "mlfn-allow-functions-egress")
    rules = policy["spec"]["egress"]
    pg = [
        r
        for r in rules
        if r.get("to")
        and r["to"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["pg"]
    ]
    assert pg and pg[0]["ports"] == [{"protocol": "TCP", "port": 5433}]


def test_retrain_scales_to_zero_and_a_pingsource_wakes_it() -> None:
    objects = _pipeline()
    annotations = find(objects, "Service", "retrain")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    ping = find(objects, "PingSource", "retrain-ping")
    assert ping["apiVersion"] == "sources.knative.dev/v1"
    assert ping["spec"]["schedule"] == "* * * * *"  # every_seconds=30: cron's floor
    assert ping["spec"]["sink"]["ref"] == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": "retrain",
        "namespace": "ml",
    }
    assert json.loads(ping["spec"]["data"]) == {"model": "digits", "reason": "every_seconds"}
    assert not [o for o in objects if o["kind"] == "PingSource" and o is not ping]


@pytest.mark.needs_shared
@pytest.mark.skipif(not CRDS.is_dir(), reason=f"needs the Knative CRDs in {CRDS} (../shared)")
def test_every_object_of_the_pipeline_validates() -> None:
    for obj in _pipeline():
        validate(obj)


def test_cron_schedules() -> None:
    assert [cron_schedule(s) for s in (1, 60, 119, 600, 3600, 5 * 3600, 2 * 86400)] == [
        "* * * * *",
        "* * * * *",
        "* * * * *",
        "*/10 * * * *",
        "0 */1 * * *",
        "0 */5 * * *",
        "0 0 * * *",
    ]
