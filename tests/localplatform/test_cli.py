"""`mlfn dev` flags that fail before anything starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mlfn.cli import root

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value", ["nonsense", "host:", ":9092", "host:port"])
def test_a_bootstrap_that_is_not_host_port_is_a_usage_error(value: str) -> None:
    r = CliRunner().invoke(root, ["dev", "--bootstrap", value])
    assert r.exit_code == 2
    assert f"Invalid value for --bootstrap: {value!r} is not HOST:PORT" in r.output
