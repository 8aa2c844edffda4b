"""The knative commands through the `mlfn` CLI: render, build, deploy, status, rollout."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlfn.cli import root
from tests.knative.conftest import PACKAGE
from tests.knative.kubestub import KubeStub

pytestmark = pytest.mark.integration


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("MLFN_FUNCTIONS_PACKAGE", PACKAGE)
    monkeypatch.setenv("MLFN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFN_NAMESPACE", "ml")
    return tmp_path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(root, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["render", "build", "deploy", "undeploy", "status", "rollout"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    code, out = _run(command, "--help")
    assert code == 0 and "Example:" in out


@pytest.mark.usefixtures("env")
def test_render_prints_one_yaml_stream() -> None:
    code, out = _run("render", "--registry", "r.io/me")
    assert code == 0
    docs = list(yaml.safe_load_all(out))
    kinds = {d["kind"] for d in docs}
    assert {"Service", "KafkaSource", "Trigger", "JobSink", "Broker", "KafkaSink"} <= kinds
    ksvc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "predict")
    assert ksvc["metadata"]["namespace"] == "ml"
    assert ksvc["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "r.io/me/mlfn:sha-"
    )
    assert out.startswith("---\n# Why mlfn patches Knative's config")


def test_render_writes_a_file_per_function(env: Path) -> None:
    code, out = _run("render", "-o", str(env / "out"), "--function", "predict")
    assert code == 0
    assert sorted(p.name for p in (env / "out").iterdir()) == [
        "config-features.yaml",
        "predict.yaml",
        "shared.yaml",
    ]
    assert "wrote" in out
    code, out = _run("render", "--function", "predct")
    assert code == 1 and "Error: no function named 'predct'; found: " in out


@pytest.mark.usefixtures("env")
def test_build_without_a_working_builder_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    code, out = _run("build")
    assert code == 1
    assert "docker: `docker info` exited 1: Cannot connect to the Docker daemon" in out
    assert "podman: not on PATH" in out and "Install one" in out


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    s = KubeStub().start()
    yield s
    s.stop()


def test_deploy_says_when_the_database_secret_is_missing(
    env: Path, stub: KubeStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(stub.kubeconfig(env / "kubeconfig")))
    code, out = _run("deploy", "--function", "predict", "--timeout", "5")
    assert code == 1
    assert "Secret 'mlfn-database' in namespace 'ml' (read by predict) does not exist" in out
    assert "kubectl -n ml create secret generic mlfn-database --from-literal=url=" in out
    assert not [r for r in stub.requests if r.method == "PATCH"]  # nothing was applied


def _add_database_secret(stub: KubeStub) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlfn-database"}}
    stub.add(secret, "/api/v1/namespaces/ml/secrets/mlfn-database")


def test_deploy_says_when_the_object_store_secret_is_missing(
    env: Path, stub: KubeStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(stub.kubeconfig(env / "kubeconfig")))
    monkeypatch.setenv("MLFN_ARTIFACT_URL", "s3://models/mlfn")
    _add_database_secret(stub)
    code, out = _run("deploy", "--function", "predict", "--timeout", "5")
    assert code == 1
    assert "Secret 'mlfn-artifacts' in namespace 'ml' (read by predict) does not exist" in out
    assert (
        "create secret generic mlfn-artifacts --from-literal=access_key_id=... "
        "--from-literal=secret_access_key=..." in out
    )
    assert not [r for r in stub.requests if r.method == "PATCH"]


def test_deploy_then_undeploy_one_function(
    env: Path, stub: KubeStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(stub.kubeconfig(env / "kubeconfig")))
    _add_database_secret(stub)
    code, out = _run("deploy", "--function", "predict", "--timeout", "5")
    assert code == 0, out
    assert "Service/predict created" in out
    assert out.rstrip().endswith("predict: http://predict.ml.example.com")
    code, out = _run("undeploy", "--function", "predict")
    assert code == 0 and "Service/predict deleted" in out


def test_deploy_without_kubeconfig_is_a_clear_error(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(env / "nope"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, out = _run("deploy")
    assert code == 1 and "Error: no usable kubeconfig" in out


def _fake_control(monkeypatch: pytest.MonkeyPatch, **attrs: object) -> None:
    module = types.ModuleType("localplatform.control")
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, "localplatform.control", module)


@pytest.mark.usefixtures("env")
def test_status_and_rollout_use_the_local_platform_without_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[object, ...]] = []

    def rollout(
        settings: object, function: str, *, percent: int | None, promote: bool, rollback: bool
    ) -> str:
        calls.append((function, percent, promote, rollback))
        return "predict: 20% candidate"

    _fake_control(monkeypatch, status_text=lambda settings: "predict  ready", rollout=rollout)
    assert _run("status") == (0, "predict  ready\n")
    assert _run("rollout", "predict", "--percent", "20") == (0, "predict: 20% candidate\n")
    assert calls == [("predict", 20, False, False)]


@pytest.mark.usefixtures("env")
def test_local_platform_down_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(settings: object) -> str:
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    _fake_control(monkeypatch, status_text=down)
    code, out = _run("status")
    assert code == 1
    assert "the local platform is not running; start it with `make dev`" in out


@pytest.mark.usefixtures("env")
def test_rollout_needs_exactly_one_action() -> None:
    code, out = _run("rollout", "predict", "--percent", "20", "--promote")
    assert code == 2 and "exactly one of --percent P, --promote, --rollback" in out
