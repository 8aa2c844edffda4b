"""A function that serves gRPC, for the gateway's gRPC port (``mlfn dev``)."""
