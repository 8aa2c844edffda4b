"""Issue 11 on the cluster side: Flagger canaries, the model pin, HPA, scrape wiring, apply order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from knative.cluster import Cluster, connect
from knative.deploy import APPLY_RANK, apply_all, apply_order, delete_all
from knative.errors import ClusterError
from knative.manifests import RenderOptions, render
from knative.manifests.admission import admission_problems
from knative.manifests.common import Obj
from knative.manifests.features import required_flags
from knative.manifests.flagger import QUERIES
from knative.manifests.monitoring import pod_monitor
from knative.rollout import pin_model_version, version_from_event
from runtime.errors import SpecError
from runtime.spec import FunctionSpec, Rollout, Scaling
from tests.knative.conftest import find
from tests.knative.kubestub import KubeStub
from tests.knative.schemas import CRDS, validate

needs_crds = pytest.mark.skipif(not CRDS.is_dir(), reason=f"needs the CRDs in {CRDS}")


@cache
def _example() -> tuple[FunctionSpec, ...]:
    from runtime.registry import discover

    return tuple(fn.spec for fn in discover("functions"))


def example_specs(**rollout: object) -> list[FunctionSpec]:
    """The example pipeline in functions/, with ``rollout`` on predict."""
    out = []
    for spec in _example():
        if spec.name == "predict":
            spec = spec.model_copy(update={"rollout": Rollout(strategy="canary", **rollout)})
        out.append(spec)
    return out


@pytest.mark.unit
@pytest.mark.needs_shared
@needs_crds
def test_the_example_pipeline_with_a_canary_predict_renders_valid_flagger_objects() -> None:
    objects = render(example_specs(min_model_quality=0.9), RenderOptions(namespace="ml")).all()
    for obj in objects:
        validate(obj)
    c = find(objects, "Canary", "predict")["spec"]
    assert c["provider"] == "knative"
    assert c["targetRef"] == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": "predict",
    }
    a = c["analysis"]
    r = Rollout(strategy="canary")
    assert (a["interval"], a["threshold"], a["stepWeight"], a["maxWeight"]) == (
        "30s",
        r.threshold,
        r.step_weight,
        r.max_weight,
    )
    assert [(m["name"], m["templateRef"]["name"], m["thresholdRange"]) for m in a["metrics"]] == [
        ("success-rate", "mlfn-request-success-rate", {"min": 99.0}),
        ("latency-p99", "mlfn-request-duration-p99", {"max": 500.0}),
        ("model-quality", "mlfn-model-quality", {"min": 0.9}),
    ]
    assert a["metrics"][2]["templateVariables"] == {"metric": "accuracy"}
    templates = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "MetricTemplate"}
    assert set(templates) == set(QUERIES)
    assert all(t["provider"]["type"] == "prometheus" for t in templates.values())
    assert "histogram_quantile(0.99" in templates["mlfn-request-duration-p99"]["query"]
    assert 'revision="{{ route }}"' in templates["mlfn-request-success-rate"]["query"]
    # replace functions get no Canary; the pin job exists only for the canary one
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Canary"] == ["predict"]
    pins = [o["metadata"]["name"] for o in objects if o["metadata"]["name"].endswith("-pin")]
    assert (
        sorted(pins) == ["predict-pin"] * 5
    )  # ServiceAccount, Role, RoleBinding, JobSink, Trigger


@pytest.mark.unit
def test_without_canaries_no_flagger_object_is_rendered() -> None:
    kinds = {o["kind"] for o in render(example_specs(), RenderOptions()).all()}
    assert "Canary" in kinds
    plain = render(list(_example()), RenderOptions()).all()
    assert not {"Canary", "MetricTemplate"} & {o["kind"] for o in plain}


@pytest.mark.unit
def test_blue_green_renders_iterations_instead_of_weights() -> None:
    objects = render(example_specs(iterations=4, interval="PT1M"), RenderOptions()).all()
    a = find(objects, "Canary", "predict")["spec"]["analysis"]
    assert (a["iterations"], a["interval"]) == (4, "60s")
    assert "stepWeight" not in a and "maxWeight" not in a


@pytest.mark.unit
def test_rollout_parameters_that_flagger_would_not_honour_fail_at_decoration() -> None:
    with pytest.raises(ValueError, match="below 10s, which Flagger raises to 10s"):
        Rollout(strategy="canary", interval=5)
    with pytest.raises(ValueError, match=r"step_weight \(70\) is above max_weight \(50\)"):
        Rollout(strategy="canary", step_weight=70, max_weight=50)
    with pytest.raises(ValueError, match="serves no model"):
        FunctionSpec(
            name="x",
            kind="http",
            module="m",
            entrypoint="f",
            rollout={"strategy": "canary", "min_model_quality": 0.9},
        )


@pytest.mark.unit
@pytest.mark.parametrize("metric", ["cpu", "memory"])
def test_hpa_on_cpu_or_memory_renders_and_passes_admission(metric: str) -> None:
    spec = FunctionSpec(
        name="hpa",
        kind="http",
        module="m",
        entrypoint="f",
        scaling={"autoscaler_class": "hpa.autoscaling.knative.dev", "metric": metric, "target": 80},
    )
    out = render([spec], RenderOptions())  # render raises when admission would reject
    notes = find(out.all(), "Service", "hpa")["spec"]["template"]["metadata"]["annotations"]
    assert notes["autoscaling.knative.dev/class"] == "hpa.autoscaling.knative.dev"
    assert notes["autoscaling.knative.dev/metric"] == metric
    assert admission_problems(out.all(), required_flags([spec])) == []


@pytest.mark.unit
@pytest.mark.parametrize(
    ("scaling", "message"),
    [
        ({"metric": "cpu"}, "'kpa.autoscaling.knative.dev' does not scale on metric 'cpu'"),
        ({"metric": "memory"}, "use autoscaler_class='hpa.autoscaling.knative.dev'"),
        (
            {"autoscaler_class": "hpa.autoscaling.knative.dev"},
            "does not scale on metric 'concurrency' \\(it scales on cpu or memory\\)",
        ),
        (
            {"autoscaler_class": "hpa.autoscaling.knative.dev", "metric": "rps"},
            "use autoscaler_class='kpa.autoscaling.knative.dev' for 'rps'",
        ),
    ],
)
def test_bad_autoscaler_combinations_fail_at_decoration(
    scaling: dict[str, str], message: str
) -> None:
    from pydantic import BaseModel

    from runtime.function import inference

    class Row(BaseModel):
        x: int

    with pytest.raises(ValueError, match=message):
        Scaling.model_validate(scaling)
    with pytest.raises(SpecError, match=message):

        @inference(request=Row, response=Row, scaling=scaling)
        def f(batch: list[Row]) -> list[Row]:
            return batch


@pytest.mark.unit
def test_scrape_wiring_follows_the_setting() -> None:
    spec = FunctionSpec(name="fn", kind="http", module="m", entrypoint="f")

    def render_with(mode: str) -> list[Obj]:
        return render([spec], RenderOptions(metrics_scrape=mode, monitoring_namespace="prom")).all()  # type: ignore[arg-type]

    notes = find(render_with("annotations"), "Service", "fn")["spec"]["template"]["metadata"]
    assert notes["annotations"]["prometheus.io/scrape"] == "true"
    assert notes["annotations"]["prometheus.io/port"] == "8080"
    assert notes["annotations"]["prometheus.io/path"] == "/metrics"
    objs = render_with("podmonitor")
    ann = find(objs, "Service", "fn")["spec"]["template"]["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in ann
    pm = find(objs, "PodMonitor", "mlfn-functions")
    policy = find(objs, "NetworkPolicy", "mlfn-allow-monitoring-to-functions")["spec"]
    assert policy["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0][
        "values"
    ] == ["prom"]
    none = render_with("none")
    assert not [o for o in none if o["kind"] == "PodMonitor"]
    assert not [o for o in none if o["metadata"]["name"] == "mlfn-allow-monitoring-to-functions"]
    assert pm is not None


@pytest.mark.unit
def test_pod_monitor_has_the_prometheus_operator_shape() -> None:
    """No PodMonitor CRD is shipped: check the fields monitoring.coreos.com/v1 requires."""
    [pm] = pod_monitor(RenderOptions(namespace="ml", metrics_scrape="podmonitor"))
    assert (pm["apiVersion"], pm["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    spec = pm["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "podMetricsEndpoints"}
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/part-of": "mlfn"}
    assert spec["namespaceSelector"] == {"matchNames": ["ml"]}
    [ep] = spec["podMetricsEndpoints"]
    allowed = {"port", "portNumber", "targetPort", "path", "interval", "relabelings", "scheme"}
    assert set(ep) <= allowed and ep["path"] == "/metrics" and ep["targetPort"] == 8080
    for r in ep["relabelings"]:
        assert set(r) <= {"sourceLabels", "regex", "action", "targetLabel", "replacement"}


# --- against the test API server ---------------------------------------------------------


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    s = KubeStub().start()
    yield s
    s.stop()


@pytest.fixture
def cluster(stub: KubeStub, tmp_path: Path) -> Cluster:
    return connect(config_file=stub.kubeconfig(tmp_path / "kubeconfig"), request_timeout=5)


def _order(stub: KubeStub, method: str) -> list[str]:
    return [r.path.rsplit("/", 2)[-2] for r in stub.requests if r.method == method]


@pytest.mark.integration
def test_deploy_applies_in_dependency_order_and_undeploy_reverses_it(
    stub: KubeStub, cluster: Cluster
) -> None:
    objects = render(example_specs(min_model_quality=0.9), RenderOptions(namespace="ml")).all()
    apply_all(cluster, objects, timeout=5, poll=0.01)
    plurals = _order(stub, "PATCH")
    first = {p: plurals.index(p) for p in reversed(plurals)}
    last = {p: len(plurals) - 1 - plurals[::-1].index(p) for p in plurals}
    assert last["metrictemplates"] < first["canaries"]
    assert last["services"] < first["canaries"]
    assert last["brokers"] < first["triggers"]
    assert last["brokers"] < first["kafkasources"]
    assert last["jobsinks"] < first["triggers"]
    assert last["roles"] < first["rolebindings"]
    ranks = [APPLY_RANK[o["kind"]] for o in apply_order(objects)]
    assert ranks == sorted(ranks)
    delete_all(cluster, objects)
    gone = _order(stub, "DELETE")
    assert gone.index("kafkasources") < gone.index("brokers")
    assert gone.index("canaries") < gone.index("metrictemplates")


@pytest.mark.integration
def test_a_published_version_pins_the_service_and_deploy_keeps_the_pin(
    stub: KubeStub, cluster: Cluster, tmp_path: Path
) -> None:
    objects = render(example_specs(), RenderOptions(namespace="ml")).all()
    apply_all(cluster, objects, timeout=5, poll=0.01)
    event = tmp_path / "event"
    event.write_text(
        json.dumps(
            {
                "specversion": "1.0",
                "type": "mlfn.model.published",
                "source": "/retrain",
                "id": "1",
                "subject": "digits",
                "data": {"model": "digits", "version": 7},
            }
        )
    )
    pin_model_version(cluster, "predict", "ml", version_from_event(event))
    path = "/apis/serving.knative.dev/v1/namespaces/ml/services/predict"

    def pinned() -> list[str]:
        env = stub.objects[path]["spec"]["template"]["spec"]["containers"][0]["env"]
        return [e["value"] for e in env if e["name"] == "MLFN_MODEL_VERSION"]

    assert pinned() == ["7"]
    generation = stub.objects[path]["metadata"]["generation"]
    pin_model_version(cluster, "predict", "ml", 7)  # idempotent: no new revision
    assert stub.objects[path]["metadata"]["generation"] == generation
    apply_all(cluster, objects, timeout=5, poll=0.01)  # a redeploy does not unpin it
    assert pinned() == ["7"]


@pytest.mark.unit
def test_a_pin_event_that_names_no_version_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "event"
    bad.write_text(json.dumps({"type": "mlfn.model.rejected", "data": {"version": None}}))
    with pytest.raises(ClusterError, match=r"is not an mlfn\.model\.published event"):
        version_from_event(bad)
    with pytest.raises(ClusterError, match="cannot read the published event"):
        version_from_event(tmp_path / "missing")
