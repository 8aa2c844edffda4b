"""The gateway's gRPC port: the Open Inference Protocol routed to instances over HTTP/2.

``mlfn dev`` opens it when a function has ``grpc=True``. Each ``ModelInfer``,
``ModelReady`` and ``ModelMetadata`` call names its model; that name picks the function
(its own name, or the name of the model it serves), the traffic split picks a revision,
and the call goes to an instance's gRPC port as raw bytes (nothing is decoded twice).
Like HTTP requests, calls count towards the revision's concurrency (what the autoscaler
scales on) and wait for an instance when the revision is at zero. ``ServerLive``,
``ServerReady`` and ``ServerMetadata`` name no model: the gateway answers them itself.

Status codes decided here: NOT_FOUND (no such function), FAILED_PRECONDITION (the
function does not serve gRPC), UNAVAILABLE (its instances keep failing to start),
DEADLINE_EXCEEDED (no answer within the function's ``timeout_seconds``); an instance's
own status codes pass through unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import grpc

from localplatform.revisions import Instance, StartFailure
from localplatform.serving import FunctionState, Serving
from runtime.server.grpc import grpc_predict_v2_pb2 as pb

__all__ = ["SERVICE", "GrpcGateway"]

log = logging.getLogger(__name__)

SERVICE = "/inference.GRPCInferenceService/"
"""The method prefix the gateway routes; other services answer UNIMPLEMENTED."""

_NAMED: dict[str, Callable[[bytes], str]] = {
    "ModelInfer": lambda raw: str(pb.ModelInferRequest.FromString(raw).model_name),
    "ModelReady": lambda raw: str(pb.ModelReadyRequest.FromString(raw).name),
    "ModelMetadata": lambda raw: str(pb.ModelMetadataRequest.FromString(raw).name),
}
_OWN: dict[str, bytes] = {
    "ServerLive": pb.ServerLiveResponse(live=True).SerializeToString(),
    "ServerReady": pb.ServerReadyResponse(ready=True).SerializeToString(),
    "ServerMetadata": pb.ServerMetadataResponse(
        name="mlfn dev", version="2", extensions=["binary_tensor_data"]
    ).SerializeToString(),
}


class _Routes(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, gateway: GrpcGateway) -> None:
        self.gateway = gateway

    def service(self, details: Any) -> Any:
        method = str(details.method)
        if not method.startswith(SERVICE):
            return None

        async def call(request: bytes, context: Any) -> bytes:
            return await self.gateway.call(method, request, context)

        return grpc.unary_unary_rpc_method_handler(call)


class GrpcGateway:
    """The gRPC front door of ``mlfn dev`` (see the module docstring)."""

    def __init__(self, serving: Serving, *, rng: random.Random | None = None) -> None:
        self.serving = serving
        self.rng = rng or random.Random()
        self.port = 0
        self._server: Any = None
        self._channels: dict[int, Any] = {}

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port); return the port."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers([_Routes(self)])
        try:
            self.port = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise OSError(
                f"the gateway cannot listen for gRPC on {host}:{port}; pick another port "
                "with MLFN_PLATFORM_GRPC_PORT (0: any free one)"
            )
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop accepting calls; let those in progress finish within ``grace`` seconds."""
        if self._server is not None:
            await self._server.stop(grace)
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def _function(self, name: str) -> FunctionState | None:
        functions = self.serving.functions
        if name in functions:
            return functions[name]
        serving_model = [
            fn
            for fn in functions.values()
            if fn.latest.spec.model is not None and fn.latest.spec.model.name == name
        ]
        return serving_model[0] if len(serving_model) == 1 else None

    async def _channel(self, inst: Instance) -> Any:
        port = inst.grpc_port
        assert port is not None
        channel = self._channels.get(port)
        if channel is None:
            if len(self._channels) > 256:  # instances come and go: forget the oldest
                oldest = next(iter(self._channels))
                await self._channels.pop(oldest).close()
            channel = grpc.aio.insecure_channel(
                f"127.0.0.1:{port}",
                options=[
                    ("grpc.max_receive_message_length", -1),
                    ("grpc.max_send_message_length", -1),
                ],
            )
            self._channels[port] = channel
        return channel

    async def call(self, method: str, request: bytes, context: Any) -> bytes:
        """Answer one call: here (server RPCs) or through a revision to an instance."""
        rpc = method[len(SERVICE) :]
        if rpc in _OWN:
            return _OWN[rpc]
        named = _NAMED.get(rpc)
        if named is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is not served by mlfn")
        try:
            name = named(request)  # type: ignore[misc]
        except Exception as err:  # protobuf's DecodeError
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"undecodable {rpc}: {err}")
        fn = self._function(name)
        if fn is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no function or model {name!r}; functions: {', '.join(sorted(self.serving.functions))}",
            )
        assert fn is not None
        rev = fn.revisions[fn.traffic.pick(self.rng)]
        if not rev.spec.grpc:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{fn.name} does not serve gRPC; set grpc=True on its @inference, or use HTTP",
            )
        return await self._forward(method, request, context, rev)

    async def _forward(self, method: str, request: bytes, context: Any, rev: Any) -> bytes:
        clock = time.monotonic
        start = clock()
        rev.begin(start)
        inst: Instance | None = None
        metadata = [(k, v) for k, v in (context.invocation_metadata() or ()) if k == "x-request-id"]
        failure: tuple[Any, str] | None = None
        try:
            async with asyncio.timeout_at(start + rev.spec.timeout_seconds):
                inst = rev.acquire()
                if inst is None:
                    inst = await rev.wait_instance()
                call = (await self._channel(inst)).unary_unary(method)
                reply: bytes = await call(request, metadata=metadata, wait_for_ready=True)
            rev.served += 1
            return reply
        except grpc.aio.AioRpcError as err:
            rev.errors += 1
            failure = (err.code(), err.details() or "")
        except StartFailure as err:
            rev.errors += 1
            failure = (grpc.StatusCode.UNAVAILABLE, str(err))
        except TimeoutError:
            rev.errors += 1
            where = "waiting for an instance" if inst is None else f"waiting for {inst.id}"
            failure = (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no response within the function's timeout of {rev.spec.timeout_seconds}s "
                f"({where})",
            )
        finally:
            rev.end(clock())
            if inst is not None:
                stop = rev.release(inst)
                if stop is not None:
                    self.serving.released(stop)
        await context.abort(*failure)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover
