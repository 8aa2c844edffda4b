"""Booting a gevent worker: gevent's plugin lookups read the installed packages once."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import pytest

from runtime.server.worker import _entry_points_read_once

pytestmark = pytest.mark.unit


def test_entry_points_are_read_once_within_the_block_and_restored_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = metadata.entry_points
    reads: list[dict[str, Any]] = []

    def counting(**params: Any) -> Any:
        reads.append(params)
        return real(**params)

    monkeypatch.setattr(metadata, "entry_points", counting)
    expected = sorted(ep.name for ep in real(group="console_scripts"))
    assert expected, "this environment has console scripts (pytest's among them)"
    with _entry_points_read_once():
        for _ in range(25):  # gevent's patch_all looks its plugins up once per module
            got = sorted(ep.name for ep in metadata.entry_points(group="console_scripts"))
            assert got == expected
    assert reads == [{}], "one scan of the installed packages for all 25 lookups"
    assert metadata.entry_points is counting, "restored after the block"
