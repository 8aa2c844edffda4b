"""`mlfn serve --grpc-port`: only inference functions serve gRPC; the flag says so."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mlfn.cli import root

pytestmark = pytest.mark.unit


def test_grpc_port_on_an_event_function_is_a_usage_error() -> None:
    env = {"MLFN_FUNCTIONS_PACKAGE": "functions"}
    r = CliRunner().invoke(root, ["serve", "preprocess", "--grpc-port", "0"], env=env)
    assert r.exit_code == 2, r.output
    assert "preprocess is an event function; only inference functions serve gRPC" in r.output
