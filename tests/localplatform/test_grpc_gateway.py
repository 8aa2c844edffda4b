"""`mlfn dev`'s gRPC port: the Open Inference Protocol routed to instances, from zero."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.fixtures.platform import start_platform

pytestmark = pytest.mark.integration

GRPC = {
    "MLFN_FUNCTIONS_PACKAGE": "tests.localplatform.grpcfns",
    "MLFN_PLATFORM_SERVER": "localplatform.instance:run",
    "MLFN_PLATFORM_GRPC_PORT": "0",
}


def test_the_grpc_port_routes_by_model_name_and_wakes_the_function(tmp_path: Path) -> None:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    with start_platform(tmp_path, **GRPC) as platform:
        found = re.search(r"gRPC ([0-9.]+:\d+)", platform.output())
        assert found, platform.output()
        assert platform.instances("square") == 0  # scaled to zero: the call wakes it

        async def calls() -> tuple[bool, list[float], list[float], grpc.StatusCode]:
            client = InferenceGRPCClient(found.group(1), timeout=60)
            try:
                live = await client.is_server_live()
                tensor = InferInput("input-0", [1, 3], "FP32")
                tensor.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.float32))
                first = await client.infer(InferRequest(model_name="square", infer_inputs=[tensor]))
                again = await client.infer(InferRequest(model_name="square", infer_inputs=[tensor]))
                try:
                    await client.infer(InferRequest(model_name="cube", infer_inputs=[tensor]))
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as err:
                    code = err.code()
                return (
                    live,
                    first.outputs[0].as_numpy().tolist(),
                    again.outputs[0].as_numpy().tolist(),
                    code,
                )
            finally:
                await client.close()

        live, first, again, missing = asyncio.run(calls())
        assert live and first == again == [[1.0, 4.0, 9.0]]
        assert missing == grpc.StatusCode.NOT_FOUND
        assert platform.instances("square") == 1
        served = sum(rev["served"] for rev in platform.revisions("square"))
        assert served >= 2  # counted like HTTP requests (what the autoscaler sees)
