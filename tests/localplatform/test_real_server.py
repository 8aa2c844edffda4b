"""``mlfn dev`` with the real server in every instance: settings reach the forked instances."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fixtures.platform import Platform, start_platform

pytestmark = pytest.mark.integration

REAL = {"MLFN_FUNCTIONS_PACKAGE": "tests.localplatform.realfns"}


def _batch_sizes(platform: Platform, n: int = 8) -> list[int]:
    assert platform.call("batched", {"n": 0}).status_code == 200  # warm: one instance ready
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda i: platform.call("batched", {"n": i}), range(n)))
    assert [r.status_code for r in answers] == [200] * n
    return [r.json()["batch"] for r in answers]


@pytest.mark.parametrize(("batching", "coalesced"), [("false", False), ("true", True)])
def test_mlfn_batching_reaches_instances_under_mlfn_dev(
    tmp_path: Path, batching: str, coalesced: bool
) -> None:
    with start_platform(tmp_path, **REAL, MLFN_BATCHING=batching) as platform:
        sizes = _batch_sizes(platform)
    if coalesced:
        assert max(sizes) > 1, f"concurrent requests should share a batch: {sizes}"
    else:
        assert sizes == [1] * len(sizes), f"MLFN_BATCHING=false must call once per request: {sizes}"
