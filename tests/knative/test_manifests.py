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
    env = {e["name"]: e["value"] for e in c["env"]}
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
    src = find(rendered.all(), "KafkaSource", "preprocess-digits-raw")["spec"]
    assert src["bootstrapServers"] == ["my-cluster-kafka-bootstrap.kafka:9092"]
    assert src["topics"] == ["digits.raw"]
    assert src["consumerGroup"] == "mlfn-preprocess-digits-raw"
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
    trig = find(rendered.all(), "Trigger", "preprocess-digits-raw-records")["spec"]
    assert trig["filters"] == [
        {"exact": {"type": "dev.knative.kafka.event"}},
        {"prefix": {"source": "/apis/v1/namespaces/ml/kafkasources/preprocess-digits-raw#"}},
    ]
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
    src = find(out.all(), "KafkaSource", "ingest-a")["spec"]
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
    for name in ("predict", "preprocess", "echo", "predict-torch"):
        kinds = [o["kind"] for o in rendered.functions[name]]
        assert "Role" not in kinds and "RoleBinding" not in kinds
        sa = find(rendered.functions[name], "ServiceAccount", name)
        assert sa["automountServiceAccountToken"] is False


def test_retrain_may_patch_only_the_canary_service(rendered: Rendered) -> None:
    role = find(rendered.all(), "Role", "retrain-rollout")
    assert role["rules"] == [
        {
            "apiGroups": ["serving.knative.dev"],
            "resources": ["services"],
            "resourceNames": ["predict"],
            "verbs": ["get", "patch"],
        },
        {
            "apiGroups": ["serving.knative.dev"],
            "resources": ["revisions"],
            "verbs": ["get", "list"],
        },
    ]
    binding = find(rendered.all(), "RoleBinding", "retrain-rollout")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "retrain", "namespace": "ml"}]
    assert find(rendered.all(), "ServiceAccount", "retrain")["automountServiceAccountToken"]


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
    api = find(rendered.all(), "NetworkPolicy", "mlfn-allow-rollout-to-apiserver")["spec"]
    assert api["podSelector"]["matchExpressions"][0]["values"] == ["retrain"]


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
    spec = FunctionSpec(
        name="hpa",
        kind="http",
        module="m",
        entrypoint="f",
        scaling={"autoscaler_class": "hpa.autoscaling.knative.dev"},
    )
    with pytest.raises(RenderError, match="HPA class scales on cpu or memory"):
        render([spec], opts)


def test_render_one_function_names_the_others_when_missing(
    specs: list[FunctionSpec], opts: RenderOptions
) -> None:
    one = render(specs, opts, only="predict")
    assert list(one.functions) == ["predict"]
    with pytest.raises(RenderError, match=r"no function named 'predct'; found: .*predict"):
        render(specs, opts, only="predct")


def test_a_source_key_type_becomes_knatives_key_type_label(
    specs: list[FunctionSpec], opts: RenderOptions
) -> None:
    prep = next(s for s in specs if s.sources)
    src = prep.sources[0].model_copy(update={"key_type": "byte-array"})
    objs = render([prep.model_copy(update={"sources": (src,)})], opts).all()
    labels = find(objs, "KafkaSource", "preprocess-digits-raw")["metadata"]["labels"]
    assert labels["kafkasources.sources.knative.dev/key-type"] == "byte-array"
    plain = find(render([prep], opts).all(), "KafkaSource", "preprocess-digits-raw")
    assert "kafkasources.sources.knative.dev/key-type" not in plain["metadata"]["labels"]
