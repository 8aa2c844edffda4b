"""The pure builders: what each rendered object says, for CPU, GPU, event and job functions."""

from __future__ import annotations

import pytest

from knative.errors import RenderError
from knative.manifests import Rendered, RenderOptions, render
from knative.manifests.admission import admission_problems
from knative.manifests.features import required_flags
from runtime.spec import FunctionSpec
from tests.knative.conftest import find

pytestmark = pytest.mark.unit
A = "autoscaling.knative.dev/"


def _pod(rendered: Rendered, name: str) -> dict:  # type: ignore[type-arg]
    return find(rendered.all(), "Service", name)["spec"]["template"]["spec"]


def test_cpu_service_carries_the_spec_scaling_resources_and_probes(rendered: Rendered) -> None:
    ksvc = find(rendered.all(), "Service", "predict")
    ann = ksvc["spec"]["template"]["metadata"]["annotations"]
    assert ann[A + "class"] == "kpa.autoscaling.knative.dev"
    assert ann[A + "metric"] == "concurrency"
    assert (ann[A + "target"], ann[A + "min-scale"], ann[A + "max-scale"]) == ("4", "1", "5")
    assert ann[A + "initial-scale"] == "1"
    assert ann[A + "window"] == "60s"
    assert A + "scale-to-zero-pod-retention-period" not in ann
    pod = _pod(rendered, "predict")
    assert pod["containerConcurrency"] == 8
    assert pod["timeoutSeconds"] == 300
    assert pod["serviceAccountName"] == "predict"
    assert "nodeSelector" not in pod and "tolerations" not in pod
    (c,) = pod["containers"]
    assert c["args"] == ["serve", "predict", "--host", "0.0.0.0"] and c["command"] == ["mlfn"]
    assert c["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz"}
    assert c["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"memory": "512Mi"},
    }
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MLFN_NAMESPACE"] == "ml" and env["MLFN_HOME"] == "/tmp/mlfn"


def test_containers_run_restricted_with_a_writable_tmp_only(rendered: Rendered) -> None:
    for name in ("predict", "predict-torch", "preprocess", "echo"):
        pod = _pod(rendered, name)
        (c,) = pod["containers"]
        assert c["securityContext"] == {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert pod["volumes"][0]["emptyDir"]


def test_gpu_function_gets_gpu_limits_placement_and_ml_defaults(rendered: Rendered) -> None:
    ksvc = find(rendered.all(), "Service", "predict-torch")
    ann = ksvc["spec"]["template"]["metadata"]["annotations"]
    assert ann[A + "initial-scale"] == "0"
    assert ann[A + "scale-to-zero-pod-retention-period"] == "300s"
    pod = ksvc["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["containers"][0]["image"].split(":")[0].endswith("mlfn-cuda")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_gpu_needs_the_feature_flags_and_zero_initial_scale(rendered: Rendered) -> None:
    serving = [o for o in rendered.cluster if o["metadata"]["namespace"] == "knative-serving"]
    features = find(serving, "ConfigMap", "config-features")
    assert features["data"]["kubernetes.podspec-nodeselector"] == "enabled"
    assert features["data"]["kubernetes.podspec-tolerations"] == "enabled"
    autoscaler = find(rendered.cluster, "ConfigMap", "config-autoscaler")
    assert autoscaler["data"] == {"allow-zero-initial-scale": "true"}


def test_cpu_only_pipeline_needs_no_placement_flags(
    specs: list[FunctionSpec], opts: RenderOptions
) -> None:
    cpu = [s for s in specs if not s.is_gpu]
    out = render(cpu, opts)
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in out.cluster] == [
        ("knative-serving", "config-features"),
        ("knative-eventing", "config-features"),
    ]
    assert out.cluster[0]["data"] == {"kubernetes.podspec-emptydir": "enabled"}
    assert out.cluster[1]["data"] == {"delivery-timeout": "enabled"}


def test_kafka_source_routes_through_the_broker_so_replies_are_kept(rendered: Rendered) -> None:
    src = find(rendered.all(), "KafkaSource", "preprocess")["spec"]
    assert src["bootstrapServers"] == ["my-cluster-kafka-bootstrap.kafka:9092"]
    assert src["topics"] == ["digits.raw"]
    assert src["consumerGroup"] == "mlfn-ml-preprocess"  # as the local plane names it
    assert src["ceOverrides"] == {"extensions": {"mlfnsource": "preprocess"}}
    assert (src["initialOffset"], src["ordering"]) == ("earliest", "ordered")
    assert src["delivery"] == {
        "retry": 2,
        "backoffPolicy": "exponential",
        "backoffDelay": "PT0.2S",
        "timeout": "PT30S",
        "deadLetterSink": {
            "ref": {
                "apiVersion": "eventing.knative.dev/v1alpha1",
                "kind": "KafkaSink",
                "name": "topic-digits-dlq",
                "namespace": "ml",
            }
        },
    }
    assert src["sink"]["ref"]["kind"] == "Broker"
    records = find(rendered.all(), "Trigger", "preprocess-records")
    assert records["metadata"]["annotations"] == {
        "kafka.eventing.knative.dev/delivery.order": "ordered"
    }
    trig = records["spec"]
    # on the extension the source stamps on every event: CloudEvent records keep their
    # own type and source, and still reach the function
    assert trig["filters"] == [{"exact": {"mlfnsource": "preprocess"}}]
    assert trig["subscriber"]["ref"]["name"] == "preprocess"
    sink = find(rendered.all(), "KafkaSink", "topic-digits-dlq")["spec"]
    assert sink["topic"] == "digits.dlq"


def test_source_without_replies_sinks_straight_to_the_service(opts: RenderOptions) -> None:
    spec = FunctionSpec(
        name="ingest",
        kind="event",
        module="m",
        entrypoint="f",
        reply_to_broker=None,
        sources=[{"topics": ["a", "b"]}],
    )
    out = render([spec], opts)
    src = find(out.all(), "KafkaSource", "ingest")["spec"]
    assert src["sink"] == {
        "ref": {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "name": "ingest",
            "namespace": "ml",
        }
    }
    assert not [o for o in out.all() if o["kind"] in ("Trigger", "Broker")]


def test_broker_is_kafka_class_with_its_configmap(rendered: Rendered) -> None:
    broker = find(rendered.all(), "Broker", "default")
    assert broker["metadata"]["annotations"] == {"eventing.knative.dev/broker.class": "Kafka"}
    assert broker["spec"]["config"]["name"] == "kafka-broker-config"
    cm = find(rendered.all(), "ConfigMap", "kafka-broker-config")
    assert cm["data"] == {
        "bootstrap.servers": "my-cluster-kafka-bootstrap.kafka:9092",
        "default.topic.partitions": "4",
        "default.topic.replication.factor": "3",
    }


def test_job_function_gets_a_jobsink_and_its_triggers_point_there(rendered: Rendered) -> None:
    objs = rendered.functions["retrain"]
    assert not [o for o in objs if o["kind"] == "Service"]
    job = find(objs, "JobSink", "retrain-job")["spec"]["job"]["spec"]["template"]["spec"]
    assert job["restartPolicy"] == "Never"
    assert job["containers"][0]["args"] == ["job", "retrain", "--event", "/etc/jobsink-event/event"]
    new = find(objs, "Trigger", "retrain-features")["spec"]
    assert new["filters"] == [{"exact": {"type": "mlfn.digits.features"}}]
    assert new["subscriber"]["ref"]["kind"] == "JobSink"
    assert new["delivery"]["deadLetterSink"] == {"uri": "http://dlq.example.svc/retrain"}
    legacy = find(objs, "Trigger", "retrain-default-t1")["spec"]
    assert legacy["filter"] == {"attributes": {"type": "mlfn.digits.labels"}}
    assert "filters" not in legacy


def test_plain_functions_get_a_tokenless_account_and_no_role(rendered: Rendered) -> None:
    for name in ("predict", "preprocess", "echo", "predict-torch", "retrain"):
        roles = [
            o["metadata"]["name"]
            for o in rendered.functions[name]
            if o["kind"] in ("Role", "RoleBinding")
        ]
        assert roles in ([], ["predict-pin", "predict-pin"])  # the pin job's, not predict's
        sa = find(rendered.functions[name], "ServiceAccount", name)
        assert sa["automountServiceAccountToken"] is False


def test_only_the_model_pin_job_of_a_canary_may_patch_its_service(rendered: Rendered) -> None:
    assert (
        find(rendered.all(), "ServiceAccount", "retrain")["automountServiceAccountToken"] is False
    )
    role = find(rendered.all(), "Role", "predict-pin")
    assert role["rules"] == [
        {
            "apiGroups": ["serving.knative.dev"],
            "resources": ["services"],
            "resourceNames": ["predict"],
            "verbs": ["get", "patch"],
        }
    ]
    binding = find(rendered.all(), "RoleBinding", "predict-pin")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "predict-pin", "namespace": "ml"}
    ]
    assert find(rendered.all(), "ServiceAccount", "predict-pin")["automountServiceAccountToken"]
    job = find(rendered.all(), "JobSink", "predict-pin")["spec"]["job"]["spec"]["template"]
    assert job["spec"]["serviceAccountName"] == "predict-pin"
    assert job["spec"]["containers"][0]["args"] == [
        "rollout", "predict", "--cluster", "--pin-event", "/etc/jobsink-event/event"
    ]  # fmt: skip
    assert job["metadata"]["labels"]["mlfn.dev/role"] == "model-pin"
    trig = find(rendered.all(), "Trigger", "predict-pin")["spec"]
    assert trig["filters"] == [{"exact": {"type": "mlfn.model.published", "subject": "digits"}}]
    assert trig["subscriber"]["ref"]["kind"] == "JobSink"
    kinds = {o["kind"] for o in rendered.all() if o["metadata"]["name"].startswith("retrain")}
    assert "Role" not in kinds  # nothing runs a controller of mlfn's on the cluster


def test_network_policies_deny_by_default_and_allow_the_pipeline(rendered: Rendered) -> None:
    deny = find(rendered.all(), "NetworkPolicy", "mlfn-default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    allow = find(rendered.all(), "NetworkPolicy", "mlfn-allow-knative-to-functions")["spec"]
    (rule,) = allow["ingress"]
    namespaces = rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert namespaces == ["knative-eventing", "knative-serving", "kourier-system"]
    assert {p["port"] for p in rule["ports"]} >= {8012, 9090}
    egress = find(rendered.all(), "NetworkPolicy", "mlfn-allow-functions-egress")["spec"]
    assert {"protocol": "TCP", "port": 9092} in egress["egress"][1]["ports"]
    api = find(rendered.all(), "NetworkPolicy", "mlfn-allow-model-pin-to-apiserver")["spec"]
    assert api["podSelector"] == {"matchLabels": {"mlfn.dev/role": "model-pin"}}
    scrape = find(rendered.all(), "NetworkPolicy", "mlfn-allow-monitoring-to-functions")["spec"]
    [rule] = scrape["ingress"]
    assert rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["monitoring"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_admission_rules_catch_what_schemas_cannot(
    rendered: Rendered, specs: list[FunctionSpec]
) -> None:
    import copy

    ksvc = copy.deepcopy(find(rendered.all(), "Service", "predict-torch"))
    flags = required_flags(specs)
    assert admission_problems([ksvc], flags) == []
    assert admission_problems([ksvc], {"kubernetes.podspec-emptydir": "enabled"}) == [
        "Service predict-torch: nodeSelector needs kubernetes.podspec-nodeselector: enabled in config-features",
        "Service predict-torch: tolerations needs kubernetes.podspec-tolerations: enabled in config-features",
    ]
    c = ksvc["spec"]["template"]["spec"]["containers"][0]
    c["ports"].append({"containerPort": 9000})
    c["env"].append({"name": "PORT", "value": "1"})
    ksvc["spec"]["template"]["metadata"]["annotations"][A + "window"] = "a minute"
    problems = "\n".join(admission_problems([ksvc], flags))
    assert "more than one container port" in problems
    assert "['PORT'] is reserved by Knative" in problems
    assert "window='a minute' is not a Go duration" in problems


def test_render_refuses_what_knative_would_reject(opts: RenderOptions) -> None:
    spec = FunctionSpec(
        name="slow",
        kind="http",
        module="m",
        entrypoint="f",
        timeout_seconds=1200,
        reply_to_broker=None,
    )
    with pytest.raises(RenderError, match=r"timeoutSeconds 1200 is above.*use job=True"):
        render([spec], opts)
    # a spec cannot ask for HPA on concurrency (see test_parity_manifests); admission still
    # catches such an object made by hand
    import copy

    ok = FunctionSpec(
        name="hpa",
        kind="http",
        module="m",
        entrypoint="f",
        scaling={"autoscaler_class": "hpa.autoscaling.knative.dev", "metric": "cpu"},
    )
    ksvc = copy.deepcopy(find(render([ok], opts).all(), "Service", "hpa"))
    ksvc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/metric"] = "rps"
    assert any("HPA class scales on cpu or memory" in p for p in admission_problems([ksvc], {}))


def test_render_one_function_names_the_others_when_missing(
    specs: list[FunctionSpec], opts: RenderOptions
) -> None:
    one = render(specs, opts, only="predict")
    assert list(one.functions) == ["predict"]
    with pytest.raises(RenderError, match=r"no function named 'predct'; found: .*predict"):
        render(specs, opts, only="predct")


def test_a_grpc_function_serves_its_one_port_as_h2c(opts: RenderOptions) -> None:
    from knative.manifests.service import build_service

    spec = FunctionSpec(
        name="predict-grpc",
        kind="inference",
        module="m",
        entrypoint="f",
        grpc=True,
    )
    ksvc = build_service(spec, opts)
    (c,) = ksvc["spec"]["template"]["spec"]["containers"]
    assert c["ports"] == [{"name": "h2c", "containerPort": 8080}]
    assert c["args"][-4:] == ["--grpc-port", "8080", "--port", "8081"]
    assert c["readinessProbe"]["tcpSocket"] == {} and "livenessProbe" not in c
    assert admission_problems([ksvc], {"kubernetes.podspec-emptydir": "enabled"}) == []
    from tests.knative.schemas import CRDS, validate

    if CRDS.is_dir():  # the Knative Service schema (../shared), where present
        validate(ksvc)
    plain = build_service(spec.model_copy(update={"grpc": False}), opts)
    assert plain["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] == "http1"


def test_grpc_is_for_inference_functions_only() -> None:
    with pytest.raises(ValueError, match="grpc=True needs an inference function"):
        FunctionSpec(name="e", kind="event", module="m", entrypoint="f", grpc=True)


def test_a_source_key_type_becomes_knatives_key_type_label(
    specs: list[FunctionSpec], opts: RenderOptions
) -> None:
    prep = next(s for s in specs if s.sources)
    src = prep.sources[0].model_copy(update={"key_type": "byte-array"})
    objs = render([prep.model_copy(update={"sources": (src,)})], opts).all()
    labels = find(objs, "KafkaSource", "preprocess")["metadata"]["labels"]
    assert labels["kafkasources.sources.knative.dev/key-type"] == "byte-array"
    plain = find(render([prep], opts).all(), "KafkaSource", "preprocess")
    assert "kafkasources.sources.knative.dev/key-type" not in plain["metadata"]["labels"]
