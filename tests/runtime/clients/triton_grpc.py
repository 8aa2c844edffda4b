"""tritonclient's gRPC client against a running server; prints what it got as JSON.

Run in its own process: tritonclient's protobuf messages (Triton's ``grpc_service.proto``)
and the protocol's ``grpc_predict_v2.proto`` (KServe's, mlfn's) declare the same
``inference.*`` names, and one process's descriptor pool takes only one of them.

Usage: python -m tests.runtime.clients.triton_grpc HOST:PORT
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException


def main(url: str) -> dict[str, Any]:
    client = tg.InferenceServerClient(url)
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("predict"),
        "extensions": list(client.get_server_metadata().extensions),
        "inputs": [t.name for t in client.get_model_metadata("predict").inputs],
    }
    x = (np.arange(3 * 64, dtype=np.float32).reshape(3, 64) % 17) / 16
    tensor = tg.InferInput("input-0", [3, 64], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("predict", [tensor], parameters={"probabilities": True})
    out["predictions"] = result.as_numpy("predictions").tolist()
    out["probabilities_shape"] = list(result.as_numpy("probabilities").shape)
    out["model_version"] = result.get_response().model_version
    bad = tg.InferInput("instances", [3, 63], "FP32")
    bad.set_data_from_numpy(x[:, :63].copy())
    try:
        client.infer("predict", [bad])
    except InferenceServerException as err:
        out["bad_status"], out["bad_message"] = err.status(), err.message()
    try:
        client.infer("predict", [tensor], model_version="99")
    except InferenceServerException as err:
        out["missing_status"], out["missing_message"] = err.status(), err.message()
    client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
