"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``).

``grpc_predict_v2.proto`` is the protocol's service definition (wire-compatible with
KServe's and Triton's); the ``*_pb2*`` modules are generated from it and committed
(:mod:`runtime.server.grpc.generate` regenerates them). :mod:`.codec` maps messages to
the dispatcher's tensors, :mod:`.service` serves them beside HTTP, through the same
dispatch core, batcher and concurrency limit.
"""
