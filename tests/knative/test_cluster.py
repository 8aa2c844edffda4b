"""Deploy, undeploy, status and rollout against a stub of the Kubernetes API on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from knative.cluster import Cluster, connect
from knative.deploy import apply_all, apply_order, delete_all, service_status, status_lines
from knative.errors import (
    ClusterError,
    ForbiddenError,
    NoKubeconfigError,
    NotInstalledError,
    NotReadyError,
    UnauthorizedError,
    UnreachableError,
)
from knative.manifests import RenderOptions, render
from knative.manifests.common import Obj
from knative.rollout import rollout
from runtime.spec import FunctionSpec
from tests.conftest import free_port
from tests.knative.kubestub import KubeStub

pytestmark = pytest.mark.integration
KSVC = "/apis/serving.knative.dev/v1/namespaces/ml/services/predict"


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    s = KubeStub().start()
    yield s
    s.stop()


@pytest.fixture
def cluster(stub: KubeStub, tmp_path: Path) -> Cluster:
    return connect(config_file=stub.kubeconfig(tmp_path / "kubeconfig"), request_timeout=5)


@pytest.fixture
def objects(specs: list[FunctionSpec], opts: RenderOptions) -> list[Obj]:
    return render(specs, opts, only="preprocess").all()


def _patches(stub: KubeStub) -> list:  # type: ignore[type-arg]
    return [r for r in stub.requests if r.method == "PATCH"]


def test_deploy_server_side_applies_each_object_and_reports_urls(
    stub: KubeStub, cluster: Cluster, objects: list[Obj]
) -> None:
    lines: list[str] = []
    statuses = apply_all(cluster, objects, timeout=5, progress=lines.append, poll=0.01)
    patches = _patches(stub)
    assert len(patches) == len(objects)
    for rec, obj in zip(patches, apply_order(objects), strict=True):
        assert rec.content_type == "application/apply-patch+yaml"
        assert rec.query == {"fieldManager": "mlfn", "force": "true"}
        assert rec.authorization == "Bearer stub-token"
        assert rec.body == obj
    paths = [r.path for r in patches]
    assert "/api/v1/namespaces/knative-serving/configmaps/config-features" in paths
    assert "/apis/serving.knative.dev/v1/namespaces/ml/services/preprocess" in paths
    assert "/apis/sources.knative.dev/v1beta1/namespaces/ml/kafkasources/preprocess" in paths
    assert "/apis/eventing.knative.dev/v1alpha1/namespaces/ml/kafkasinks/topic-digits-dlq" in paths
    discovery = {r.path for r in stub.requests if r.method == "GET" and r.path.count("/") <= 3}
    assert {
        "/api/v1",
        "/apis/serving.knative.dev/v1",
        "/apis/sources.knative.dev/v1beta1",
    } <= discovery
    ksvc = next(s for s in statuses if s.kind == "Service")
    assert (ksvc.action, ksvc.ready, ksvc.url) == (
        "created",
        True,
        "http://preprocess.ml.example.com",
    )
    assert "Service/preprocess created" in lines
    assert "Service/preprocess created Ready  http://preprocess.ml.example.com" in lines


def test_a_second_deploy_changes_nothing(
    stub: KubeStub, cluster: Cluster, objects: list[Obj]
) -> None:
    apply_all(cluster, objects, timeout=5, poll=0.01)
    versions = {p: o["metadata"]["resourceVersion"] for p, o in stub.objects.items()}
    again = apply_all(cluster, objects, timeout=5, poll=0.01)
    assert {s.action for s in again} == {"unchanged"}
    assert versions == {p: o["metadata"]["resourceVersion"] for p, o in stub.objects.items()}
    changed = [dict(o) for o in objects]
    ksvc = next(o for o in changed if o["kind"] == "Service")
    ksvc["spec"] = {**ksvc["spec"], "template": {**ksvc["spec"]["template"], "metadata": {}}}
    third = apply_all(cluster, changed, timeout=5, poll=0.01)
    assert [s.action for s in third if s.kind == "Service"] == ["configured"]


def test_missing_kafka_extension_names_what_to_install_before_applying(
    stub: KubeStub, cluster: Cluster, objects: list[Obj]
) -> None:
    stub.installed -= {"sources.knative.dev/v1beta1", "eventing.knative.dev/v1alpha1"}
    with pytest.raises(NotInstalledError) as err:
        apply_all(cluster, objects, timeout=5)
    text = str(err.value)
    assert (
        "KafkaSink (eventing.knative.dev/v1alpha1): install Knative's Kafka extension eventing-kafka-broker"
        in text
    )
    assert "KafkaSource (sources.knative.dev/v1beta1)" in text
    assert "Service" not in text.split("Install")[0]
    assert not _patches(stub)


def test_missing_serving_names_knative_serving(
    stub: KubeStub, cluster: Cluster, objects: list[Obj]
) -> None:
    stub.installed.discard("serving.knative.dev/v1")
    with pytest.raises(
        NotInstalledError, match=r"Service \(serving.knative.dev/v1\): install Knative Serving"
    ):
        apply_all(cluster, objects, timeout=5)


def test_missing_namespace_says_how_to_create_it(
    stub: KubeStub, cluster: Cluster, objects: list[Obj]
) -> None:
    stub.fail("PATCH", "/api/v1/namespaces/ml/", 404, "NotFound", 'namespaces "ml" not found',
              kind="namespaces", name="ml")  # fmt: skip
    with pytest.raises(
        ClusterError,
        match="namespace 'ml' does not exist; create it with `kubectl create namespace ml`",
    ):
        apply_all(cluster, objects, timeout=5)


def test_rejected_credentials(stub: KubeStub, cluster: Cluster, objects: list[Obj]) -> None:
    stub.fail("GET", "/api", 401, "Unauthorized", "Unauthorized")
    with pytest.raises(UnauthorizedError, match="rejected the credentials \\(401\\)"):
        apply_all(cluster, objects, timeout=5)


def test_forbidden_names_the_missing_permission(
    stub: KubeStub, cluster: Cluster, objects: list[Obj]
) -> None:
    stub.fail(
        "PATCH",
        "/apis/serving.knative.dev/v1/namespaces/ml/services",
        403,
        "Forbidden",
        'services.serving.knative.dev "preprocess" is forbidden: User "me" cannot patch',
        group="serving.knative.dev",
        kind="services",
        name="preprocess",
    )
    with pytest.raises(ForbiddenError) as err:
        apply_all(cluster, objects, timeout=5)
    assert "you may not patch (and create) services.serving.knative.dev" in str(err.value)
    assert "kubectl auth can-i patch services.serving.knative.dev" in str(err.value)


def test_unreachable_api_server(tmp_path: Path, stub: KubeStub, objects: list[Obj]) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    dead = connect(config_file=stub.kubeconfig(tmp_path / "kc", server=server), request_timeout=2)
    with pytest.raises(
        UnreachableError,
        match=f"cannot reach the Kubernetes API server at {server}.*kubectl cluster-info",
    ):
        apply_all(dead, objects, timeout=5)


def test_no_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(NoKubeconfigError, match=r"no usable kubeconfig.*KUBECONFIG"):
        connect(config_file=tmp_path / "missing")


def test_ready_false_reports_reason_and_message(
    stub: KubeStub, cluster: Cluster, objects: list[Obj]
) -> None:
    stub.conditions["preprocess"] = {
        "type": "Ready",
        "status": "False",
        "reason": "RevisionFailed",
        "message": "Revision preprocess-00001 failed: ImagePullBackOff",
    }
    with pytest.raises(NotReadyError) as err:
        apply_all(cluster, objects, timeout=5, poll=0.01)
    assert err.value.reason == "RevisionFailed"
    assert (
        str(err.value)
        == "Service/preprocess in ml is not ready: RevisionFailed: Revision preprocess-00001 failed: ImagePullBackOff"
    )


def test_timeout_waiting_for_ready(stub: KubeStub, cluster: Cluster, objects: list[Obj]) -> None:
    stub.conditions["preprocess"] = None
    with pytest.raises(
        NotReadyError, match=r"Service/preprocess in ml not ready after .*no Ready condition yet"
    ):
        apply_all(cluster, objects, timeout=0.3, poll=0.02)


def test_undeploy_deletes_in_reverse_and_leaves_knative_config(
    stub: KubeStub, cluster: Cluster, objects: list[Obj]
) -> None:
    apply_all(cluster, objects, timeout=5, poll=0.01)
    gone = delete_all(cluster, objects)
    deletes = [r.path for r in stub.requests if r.method == "DELETE"]
    assert not [p for p in deletes if "knative-serving" in p]
    assert deletes[0].endswith("/kafkasources/preprocess")
    assert {s.action for s in gone} == {"deleted"}
    assert [p for p in stub.objects if "knative-serving" in p]
    assert {s.action for s in delete_all(cluster, objects)} == {"absent"}


def _revision(name: str, generation: int) -> Obj:
    return {
        "metadata": {
            "name": name,
            "labels": {
                "serving.knative.dev/service": "predict",
                "serving.knative.dev/configurationGeneration": str(generation),
            },
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.fixture
def two_revisions(stub: KubeStub) -> None:
    ksvc = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": "predict",
            "namespace": "ml",
            "labels": {"app.kubernetes.io/managed-by": "mlfn"},
        },
        "spec": {"template": {}},
        "_latest": "predict-00002",
    }
    stub.add(ksvc, KSVC)
    base = "/apis/serving.knative.dev/v1/namespaces/ml/revisions/"
    stub.add(_revision("predict-00001", 1), base + "predict-00001")
    stub.add(_revision("predict-00002", 2), base + "predict-00002")


@pytest.mark.usefixtures("two_revisions")
def test_rollout_percent_promote_rollback(stub: KubeStub, cluster: Cluster) -> None:
    result = rollout(cluster, "predict", "ml", "percent", 20)
    (patch,) = _patches(stub)
    assert patch.path == KSVC
    assert patch.query == {"fieldManager": "mlfn-rollout", "force": "true"}
    assert patch.body == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "predict", "namespace": "ml"},
        "spec": {
            "traffic": [
                {"revisionName": "predict-00002", "percent": 20, "tag": "candidate"},
                {"revisionName": "predict-00001", "percent": 80, "tag": "current"},
            ]
        },
    }
    assert result.text() == "predict: predict-00002=20% (candidate), predict-00001=80% (current)"
    assert stub.objects[KSVC]["spec"]["template"] == {}
    assert rollout(cluster, "predict", "ml", "promote").traffic == [
        {"revisionName": "predict-00002", "percent": 100, "tag": "current"}
    ]
    assert rollout(cluster, "predict", "ml", "rollback").traffic == [
        {"revisionName": "predict-00001", "percent": 100, "tag": "current"}
    ]
    lists = [r for r in stub.requests if r.path.endswith("/revisions")]
    assert lists and lists[0].query == {"labelSelector": "serving.knative.dev/service=predict"}


def test_rollout_errors_say_what_is_missing(stub: KubeStub, cluster: Cluster) -> None:
    with pytest.raises(ClusterError, match="no Knative Service 'predict' in namespace 'ml'"):
        rollout(cluster, "predict", "ml", "percent", 20)
    stub.add(
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "predict", "namespace": "ml"},
            "_latest": "predict-00001",
        },
        KSVC,
    )
    with pytest.raises(ClusterError, match="no previous ready revision"):
        rollout(cluster, "predict", "ml", "rollback")


def test_status_lists_mlfn_objects(stub: KubeStub, cluster: Cluster, objects: list[Obj]) -> None:
    apply_all(cluster, objects, timeout=5, poll=0.01)
    lines = status_lines(service_status(cluster, "ml"))
    assert any(
        line.startswith("Service/preprocess")
        and "Ready" in line
        and "http://preprocess.ml.example.com" in line
        for line in lines
    )
    assert any(line.startswith("KafkaSource/preprocess") for line in lines)
    selectors = {
        r.query.get("labelSelector") for r in stub.requests if r.path.endswith("/services")
    }
    assert selectors == {"app.kubernetes.io/managed-by=mlfn"}
