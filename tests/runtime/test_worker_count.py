"""How many worker processes `mlfn serve` runs, and which gunicorn worker class."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.registry import discover
from runtime.server.serve import available_cpus, gunicorn_options
from runtime.settings import RuntimeSettings

pytestmark = pytest.mark.unit

CPUS = len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_rounds_up_and_is_capped_by_the_affinity(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == min(2, CPUS)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == CPUS
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1


def test_cgroup_v1_quota_and_no_cgroup_at_all(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(tmp_path) == CPUS
    assert available_cpus(tmp_path / "missing") == CPUS


def test_one_setting_and_the_functions_that_keep_one_worker() -> None:
    settings = RuntimeSettings()
    pinned = settings.model_copy(
        update={"server": settings.server.model_copy(update={"workers": 3})}
    )

    def opts(pkg: str, name: str, s: RuntimeSettings = pinned) -> tuple[int, str]:
        o = gunicorn_options(discover(pkg).get(name), s, "127.0.0.1", 0)
        return o["workers"], o["worker_class"]

    assert opts("functions", "predict") == (3, "gevent")
    assert opts("functions", "preprocess") == (3, "gevent")
    assert opts("tests.runtime.userfns.plain_http", "hello") == (3, "gthread")
    assert opts("functions", "retrain") == (1, "gthread")  # its retrain loop is per process
    assert opts("functions", "predict", settings)[0] == available_cpus()
