"""Real inference-protocol clients against `mlfn serve predict`: tritonclient and kserve.

One server (HTTP and gRPC) serves the module. The clients send what they send by
default: binary tensors named ``input-0``, ``binary_data_output``, ``FP32`` data.
tritonclient's gRPC client runs in its own process (its messages and KServe's share
names, and one process's protobuf pool holds only one of them).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from tests.conftest import free_port
from tests.fixtures.servers import REPO, ServerProcess, http_call, start_server
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

X = ((np.arange(3 * 64, dtype=np.float32).reshape(3, 64) % 17) / 16).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    home = tmp_path_factory.mktemp("oip-home")
    grpc_port = free_port()
    s = start_server(
        "functions", "predict", home, {"MLFN_HOME": str(home), "MLFN_GRPC_PORT": str(grpc_port)}
    )
    try:
        s.wait_ready(120)
        yield s, f"127.0.0.1:{grpc_port}"
    finally:
        s.terminate()


def _json_route(s: ServerProcess, rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    r = s.call("POST", "/", {"instances": rows.astype(float).tolist(), **extra})
    assert r.status == 200, r.body
    out: dict[str, Any] = r.json()
    return out


def test_tritonclient_http_binary_by_default_and_any_input_name(
    server: tuple[ServerProcess, str],
) -> None:
    import tritonclient.http as th

    s, _ = server
    client = th.InferenceServerClient(s.url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("predict")
    tensor = th.InferInput("input-0", [3, 64], "FP32")
    tensor.set_data_from_numpy(X)  # binary_data=True: raw bytes after the JSON header
    result = client.infer("predict", [tensor], parameters={"probabilities": True})
    expected = _json_route(s, X, probabilities=True)
    assert result.as_numpy("predictions").tolist() == expected["predictions"]
    probs = result.as_numpy("probabilities")
    assert probs.shape == (3, 10) and np.allclose(probs, expected["probabilities"])
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 24
    client.close()


def test_tritonclient_http_json_tensors_and_json_outputs(
    server: tuple[ServerProcess, str],
) -> None:
    import tritonclient.http as th

    s, _ = server
    client = th.InferenceServerClient(s.url.removeprefix("http://"))
    tensor = th.InferInput("instances", [3, 64], "FP32")
    tensor.set_data_from_numpy(X, binary_data=False)
    wanted = [th.InferRequestedOutput("predictions", binary_data=False)]
    result = client.infer("predict", [tensor], outputs=wanted)
    response = result.get_response()
    assert response["outputs"][0]["data"] == _json_route(s, X)["predictions"]
    assert [o["name"] for o in response["outputs"]] == ["predictions"]
    client.close()


def test_tritonclient_grpc(server: tuple[ServerProcess, str]) -> None:
    _, target = server
    proc = subprocess.run(
        [sys.executable, "-m", "tests.runtime.clients.triton_grpc", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["live"] and out["ready"] and out["model_ready"]
    assert out["extensions"] == ["binary_tensor_data"] and out["inputs"][0] == "instances"
    assert len(out["predictions"]) == 3 and out["probabilities_shape"] == [3, 10]
    assert out["model_version"] == "1"
    assert out["bad_status"] == "StatusCode.INVALID_ARGUMENT"
    assert "List should have at least 64 items" in out["bad_message"]
    assert out["missing_status"] == "StatusCode.NOT_FOUND"
    assert "has no version '99'; versions: 1" in out["missing_message"]


def test_kserve_rest_client_binary_and_json(server: tuple[ServerProcess, str]) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    s, _ = server
    expected = _json_route(s, X)["predictions"]

    async def call() -> list[list[int]]:
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        got = []
        try:
            for binary in (True, False):
                tensor = InferInput("input-0", [3, 64], "FP32")
                tensor.set_data_from_numpy(X, binary_data=binary)
                request = InferRequest(model_name="predict", infer_inputs=[tensor])
                response = await client.infer(s.url, request, model_name="predict")
                got.append(response.outputs[0].as_numpy().tolist())
        finally:
            await client.close()
        return got

    assert asyncio.run(call()) == [expected, expected]


def test_kserve_grpc_client_and_status_codes(server: tuple[ServerProcess, str]) -> None:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    s, target = server

    async def call() -> tuple[list[int], grpc.StatusCode, str]:
        client = InferenceGRPCClient(target)
        try:
            tensor = InferInput("input-0", [3, 64], "FP32")
            tensor.set_data_from_numpy(X)
            response = await client.infer(InferRequest(model_name="predict", infer_inputs=[tensor]))
            bad = InferInput("instances", [1, 64], "FP32")
            bad.set_data_from_numpy(X[:1] * 100)  # features must be in 0..1
            try:
                await client.infer(InferRequest(model_name="predict", infer_inputs=[bad]))
            except grpc.aio.AioRpcError as err:
                return response.outputs[0].as_numpy().tolist(), err.code(), err.details() or ""
            raise AssertionError("out-of-range features were accepted")
        finally:
            await client.close()

    predictions, code, details = asyncio.run(call())
    assert predictions == _json_route(s, X)["predictions"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "less than or equal to 1" in details


def _binary_body(size: int, payload: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "instances",
                    "datatype": "FP32",
                    "shape": [1, 64],
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }
    return head + payload, headers


def test_binary_sizes_that_do_not_fit_are_a_400_naming_the_input(
    server: tuple[ServerProcess, str],
) -> None:
    s, _ = server
    body, headers = _binary_body(252, X[:1].tobytes()[:252])
    r = http_call(s.url, "POST", "/v2/models/predict/infer", body, headers)
    assert r.status == 400, r.body
    message = r.json()["error"]["message"]
    assert message.startswith("inputs[0] (instances): a FP32 tensor of shape [1, 64] is 256 bytes")


def test_pinned_versions_answer_or_name_the_versions_that_exist(
    server: tuple[ServerProcess, str],
) -> None:
    from runtime.models.store import LocalModelStore

    s, _ = server
    oip = {
        "inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP32", "data": X[0].tolist()}]
    }
    r = s.call("POST", "/v2/models/predict/versions/5/infer", oip)
    assert r.status == 404 and "has no version '5'; versions: 1" in r.json()["error"]["message"]
    home = s.log_path.parent  # MLFN_HOME of the server
    store = LocalModelStore(home / "models")
    store.publish("digits", store.load("digits", 1).model, extra={"test": "pinning"})
    wait_for(lambda: _json_route(s, X[:1])["model_version"] == 2, 60, "the server to serve v2")
    for version in ("1", "2"):
        r = s.call("POST", f"/v2/models/predict/versions/{version}/infer", oip)
        assert r.status == 200 and r.json()["model_version"] == version, r.body
