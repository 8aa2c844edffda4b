"""`mlfn dev` as a user sees it: real processes, a real gateway, on loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from localplatform.dev import run_file
from tests.fixtures.platform import (
    Platform,
    alive,
    descendants,
    start_platform,
    stop_platform,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_scale_from_zero_answers_every_held_request(dev_platform: Platform) -> None:
    assert dev_platform.live_instances("echo") == 0, "echo starts at zero (initial_scale 0)"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: dev_platform.call("echo", {"sleep": 0.05}), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    rev = dev_platform.revisions("echo")[0]
    cold = rev["cold_starts"][0]
    assert set(cold["phases_s"]) >= {"spawn", "imports", "ready"}
    assert 0 < cold["total_s"] < 5
    assert any(d["reason"] == "request at zero" for d in rev["decisions"])


def test_routes_by_host_header_and_path_and_404_lists_functions(dev_platform: Platform) -> None:
    by_host = requests.post(
        f"{dev_platform.url}/",
        json={},
        headers={"Host": "echo.default.example.com"},
        timeout=10,
    )
    assert by_host.status_code == 200 and "pid" in by_host.json()
    missing = requests.get(f"{dev_platform.url}/nope/x", timeout=10)
    assert missing.status_code == 404
    assert "echo" in missing.json()["functions"]


def test_scales_up_under_load_then_to_zero_when_idle(dev_platform: Platform) -> None:
    stop = threading.Event()
    codes: list[int] = []

    def client() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                codes.append(
                    s.post(
                        f"{dev_platform.url}/echo/", json={"sleep": 0.05}, timeout=10
                    ).status_code
                )

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        # target 1 per instance and 4 clients: the KPA asks for ~4 instances
        wait_for(lambda: dev_platform.instances("echo") >= 3, 15, "echo to scale to 3+ instances")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert set(codes) == {200}
    # stable window 2 s + grace 0.5 s in these tests
    wait_for(lambda: dev_platform.live_instances("echo") == 0, 15, "echo to scale to zero")
    reasons = [d["reason"] for d in dev_platform.revisions("echo")[0]["decisions"]]
    assert any("scale to zero" in r for r in reasons)


def test_crashed_instance_is_replaced_and_in_flight_requests_get_502(
    dev_platform: Platform,
) -> None:
    first = dev_platform.call("fragile").json()["pid"]
    with ThreadPoolExecutor(3) as pool:
        slow = [pool.submit(dev_platform.call, "fragile", {"sleep": 1.0}) for _ in range(2)]
        wait_for(lambda: dev_platform.revisions("fragile")[0]["in_flight"] >= 2, 5, "2 in flight")
        crash = pool.submit(dev_platform.call, "fragile", {"crash": True})
        answers = [f.result(timeout=15) for f in [*slow, crash]]
    assert [a.status_code for a in answers] == [502, 502, 502]
    body: dict[str, Any] = answers[0].json()
    assert body["function"] == "fragile" and "closed the connection" in body["error"]
    again = dev_platform.call("fragile")
    assert again.status_code == 200 and again.json()["pid"] != first


def test_held_request_gets_504_after_the_function_timeout(dev_platform: Platform) -> None:
    started = time.monotonic()
    answer = dev_platform.call("stuck")
    elapsed = time.monotonic() - started
    assert answer.status_code == 504
    assert "timeout of 1s" in answer.json()["error"]
    assert 0.9 < elapsed < 4


def test_instances_that_never_start_fail_held_requests_clearly(dev_platform: Platform) -> None:
    from localplatform.control import status_text

    answer = dev_platform.call("broken")
    assert answer.status_code == 502
    message = answer.json()["error"]
    assert "failed to start 3 times" in message
    assert "loading the model failed: ModelNotFoundError" in message
    assert "register one with @register_bootstrap('never-published')" in message, message
    assert "broken-00001-1 cannot become ready" in dev_platform.output()
    assert "start failures 3, last: loading the model failed" in status_text(
        dev_platform.settings()
    )


def test_control_api_metrics_and_status_text(dev_platform: Platform) -> None:
    from localplatform.control import status_text

    dev_platform.call("echo")
    metrics = requests.get(f"{dev_platform.url}/_mlfn/metrics", timeout=10).text
    assert 'mlfn_platform_cold_start_seconds_count{function="echo",phase="total"}' in metrics
    text = status_text(dev_platform.settings())
    assert "echo-00001" in text and "cold start" in text


SPLIT_FN = """
from pydantic import BaseModel
from runtime import inference

VERSION = {version}


class Req(BaseModel):
    pass


class Resp(BaseModel):
    version: int


@inference(request=Req, response=Resp, scaling={{"initial_scale": 1, "target": 100}})
def split(batch: list[Req]) -> list[Resp]:
    return [Resp(version=VERSION) for _ in batch]
"""


def test_changed_source_makes_a_revision_and_rollout_splits_traffic(tmp_path: Path) -> None:
    from localplatform.control import rollout

    package = tmp_path / "splitfns"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = package / "split.py"
    source.write_text(SPLIT_FN.format(version=1))
    with (
        start_platform(
            tmp_path,
            cwd=tmp_path,
            MLFN_FUNCTIONS_PACKAGE="splitfns",
            MLFN_PLATFORM_WATCH_SECONDS="0.2",
        ) as platform,
        requests.Session() as s,
    ):

        def versions(n: int) -> Counter[int]:
            return Counter(
                s.post(f"{platform.url}/split/", json={}, timeout=10).json()["version"]
                for _ in range(n)
            )

        assert versions(3) == {1: 3}
        source.write_text(SPLIT_FN.format(version=2))
        wait_for(lambda: len(platform.revisions("split")) == 2, 20, "a second revision")
        wait_for(lambda: versions(1) == {2: 1}, 20, "the new revision to serve")
        settings = platform.settings()
        text = rollout(settings, "split", percent=30, promote=False, rollback=False)
        assert "split-00002 30%" in text and "split-00001 70%" in text
        n = 400
        got = versions(n)
        sd = (n * 0.3 * 0.7) ** 0.5
        assert abs(got[2] - 0.3 * n) < 4 * sd, got
        rollout(settings, "split", percent=None, promote=False, rollback=True)
        assert versions(20) == {1: 20}
        rollout(settings, "split", percent=None, promote=True, rollback=False)
        assert versions(20) == {2: 20}
        source.write_text(SPLIT_FN.format(version=3))
        wait_for(lambda: versions(1) == {3: 1}, 20, "revision 3 to serve")
        # rollouts only reach the latest two revisions: the first zygote is retired
        wait_for(lambda: len(zygotes(platform)) == 2, 20, "the first zygote to retire")


def zygotes(platform: Platform) -> list[int]:
    """The zygote processes of a running platform (its direct children)."""
    found = []
    for pid in descendants(platform.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        if b"localplatform.zygote" in cmdline and ppid == str(platform.proc.pid) and alive(pid):
            found.append(pid)
    return found


def test_sigterm_stops_everything_and_no_process_is_left(tmp_path: Path) -> None:
    with start_platform(tmp_path) as platform:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda f: platform.call(f), ["echo", "fragile"]))
        family = descendants(platform.proc.pid)
        assert len(family) >= 3, "a zygote and two instances"
        stop_platform(platform.proc, platform.log, signal.SIGTERM)
        assert platform.proc.returncode == 0
        assert not [p for p in family if alive(p)]
        assert not run_file(platform.settings()).exists()
        out = platform.output()
        assert "mlfn dev stopping (SIGTERM)" in out and "mlfn dev stopped" in out


def test_killed_platform_takes_its_instances_with_it(tmp_path: Path) -> None:
    with start_platform(tmp_path) as platform:
        platform.call("echo")
        family = descendants(platform.proc.pid)
        assert len(family) >= 2, "a zygote and the instance that answered"
        platform.proc.kill()
        platform.proc.wait(10)
        wait_for(lambda: not [p for p in family if alive(p)], 10, "orphans to die with mlfn dev")


def test_status_and_rollout_without_a_platform_say_how_to_start_one(tmp_path: Path) -> None:
    from eventing.cli import running_broker
    from localplatform.control import rollout, status_text
    from mlfn.settings import Settings

    settings = Settings().updated(common={"home": tmp_path})
    with pytest.raises(ConnectionError, match="make dev"):
        status_text(settings)
    with pytest.raises(ConnectionError, match="no local platform"):
        rollout(settings, "predict", percent=10, promote=False, rollback=False)
    assert running_broker(settings.common.home) is None


def test_dev_exits_with_a_clear_error_when_the_gateway_port_is_taken(tmp_path: Path) -> None:
    import socket

    from tests.fixtures.platform import REPO, TEST_SETTINGS

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-c", "from mlfn.cli import main; main()", "dev", "--port", port],
            cwd=REPO,
            env={**os.environ, **TEST_SETTINGS, "MLFN_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"the gateway cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--port" in done.stderr


def test_dev_exits_with_a_clear_error_when_the_functions_cannot_load(tmp_path: Path) -> None:
    from tests.fixtures.platform import REPO, TEST_SETTINGS

    env = {**TEST_SETTINGS, "MLFN_FUNCTIONS_PACKAGE": "no_such_pkg", "MLFN_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", "from mlfn.cli import main; main()", "dev", "--port", "0"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot import 'no_such_pkg'" in done.stderr
    assert "MLFN_FUNCTIONS_PACKAGE" in done.stderr


def test_refused_rollout_is_a_clean_mlfn_error(dev_platform: Platform) -> None:
    from localplatform.control import rollout
    from runtime.errors import MlfnError

    with pytest.raises(MlfnError, match="only one revision"):
        rollout(dev_platform.settings(), "echo", percent=50, promote=False, rollback=False)


def test_a_killed_zygote_is_restarted_and_serving_goes_on(tmp_path: Path) -> None:
    with start_platform(tmp_path) as platform:
        first = platform.call("echo").json()["pid"]
        (zygote,) = zygotes(platform)
        os.kill(zygote, signal.SIGKILL)
        wait_for(lambda: not alive(first), 10, "the instance to die with its zygote")
        answer = wait_for(
            lambda: (r := platform.call("echo")).status_code == 200 and r, 30, "echo to answer"
        )
        assert answer.json()["pid"] != first
        assert "zygote 1 exited unexpectedly; restarting it" in platform.output()
