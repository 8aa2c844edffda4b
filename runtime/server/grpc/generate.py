"""Regenerate the committed gRPC stubs from ``grpc_predict_v2.proto`` (grpcio-tools).

``python -m runtime.server.grpc.generate`` rewrites them; ``--check`` only compares and
exits 1 when they are stale (``make grpc-stubs`` and ``tests/runtime/test_grpc_stubs.py``).
The proto is compiled under its own file name, so that its descriptor equals KServe's
and both load in one process; the service module's import of the messages is then made
absolute.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

__all__ = ["generate", "main"]

HERE = Path(__file__).resolve().parent
PROTO = "grpc_predict_v2.proto"
STUBS = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")
_IMPORT = "import grpc_predict_v2_pb2 as grpc__predict__v2__pb2"
_ABSOLUTE = "from runtime.server.grpc import grpc_predict_v2_pb2 as grpc__predict__v2__pb2"


def generate(out: Path) -> dict[str, str]:
    """Compile the proto into ``out``; the stubs' text by file name."""
    from grpc_tools import protoc  # dev dependency (grpcio-tools)

    args = [
        "protoc",
        f"-I{HERE}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(HERE / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {HERE / PROTO}")
    texts = {name: (out / name).read_text() for name in STUBS}
    texts["grpc_predict_v2_pb2_grpc.py"] = texts["grpc_predict_v2_pb2_grpc.py"].replace(
        _IMPORT, _ABSOLUTE
    )
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        texts = generate(Path(tmp))
    stale = [
        n for n, text in texts.items() if not (HERE / n).is_file() or (HERE / n).read_text() != text
    ]
    if opts.check:
        for name in stale:
            print(f"{HERE / name} is stale: run python -m runtime.server.grpc.generate")
        return 1 if stale else 0
    for name in stale:
        (HERE / name).write_text(texts[name])
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
