"""Every rendered object passes the CRD schemas (../shared/knative-crds) or kubernetes-validate."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest

from knative.manifests import Rendered
from tests.knative.conftest import find
from tests.knative.schemas import CRDS, validate

pytestmark = [
    pytest.mark.needs_shared,
    pytest.mark.skipif(not CRDS.is_dir(), reason=f"needs the Knative CRDs in {CRDS} (../shared)"),
]

EVERY_KIND = {
    "Service",
    "KafkaSource",
    "Broker",
    "ConfigMap",
    "Trigger",
    "KafkaSink",
    "JobSink",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "NetworkPolicy",
    "Canary",
    "MetricTemplate",
}


def test_every_rendered_object_validates(rendered: Rendered) -> None:
    objects = rendered.all()
    assert {o["kind"] for o in objects} == EVERY_KIND
    for obj in objects:
        validate(obj)


def test_the_jobsink_job_is_a_valid_batch_job(rendered: Rendered) -> None:
    job = find(rendered.all(), "JobSink", "retrain-job")["spec"]["job"]
    validate({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "retrain-job"}, **job})


@pytest.mark.parametrize(
    ("kind", "name", "path"),
    [
        ("Service", "predict-torch", ["spec", "template", "spec", "containers", 0]),
        ("KafkaSource", "preprocess", ["spec"]),
        ("Trigger", "retrain-features", ["spec", "subscriber", "ref"]),
        ("KafkaSink", "topic-digits-dlq", ["spec"]),
        ("Broker", "default", ["spec", "config"]),
        ("NetworkPolicy", "mlfn-default-deny-ingress", ["spec"]),
        ("Role", "predict-pin", ["rules", 0]),
        ("Canary", "predict", ["spec", "analysis"]),
        ("Canary", "predict", ["spec", "analysis", "metrics", 0]),
        ("MetricTemplate", "mlfn-model-quality", ["spec", "provider"]),
    ],
)
def test_a_bogus_field_fails_validation(
    rendered: Rendered, kind: str, name: str, path: list[object]
) -> None:
    obj = copy.deepcopy(find(rendered.all(), kind, name))
    node = obj
    for step in path:
        node = node[step]  # type: ignore[index]
    node["bogusField"] = "x"  # type: ignore[index]
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(obj)


def test_a_wrong_type_fails_validation(rendered: Rendered) -> None:
    obj = copy.deepcopy(find(rendered.all(), "Service", "predict"))
    obj["spec"]["template"]["spec"]["containerConcurrency"] = "eight"
    with pytest.raises(jsonschema.ValidationError, match=r"containerConcurrency|eight"):
        validate(obj)


def test_the_example_pipeline_in_functions_renders_valid_objects() -> None:
    from knative.manifests import RenderOptions, render
    from runtime.registry import discover

    specs = [fn.spec for fn in discover("functions")]
    objects = render(specs, RenderOptions(namespace="ml")).all()
    kinds = {o["kind"] for o in objects}
    assert {"Service", "KafkaSource", "Trigger", "Broker", "KafkaSink"} <= kinds
    for obj in objects:
        validate(obj)
