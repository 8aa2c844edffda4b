"""Nothing lost on one machine: `mlfn dev` restarted, killed, and its processes killed mid-stream.

Each test runs the real platform (embedded broker, eventing plane, gateway, forked
instances of the real server) on ``tests/localplatform/eventfns``: every record
``{"n": i}`` of the topic becomes one row of the dataset ``rows``, keyed on its event id.
After each fault every produced ``n`` must be exactly one row, nothing dead-lettered,
duplicates counted where status and the dataset agree, and the platform still serving.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import requests

from eventing._kafka import read_topic
from eventing.producer import EventProducer
from runtime import events
from runtime.datasets import Dataset
from tests.fixtures.platform import Platform, alive, start_platform, wait_for
from tests.localplatform.eventfns.store import DATASET, DLQ, TOPIC

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ENV = {
    "MLFN_FUNCTIONS_PACKAGE": "tests.localplatform.eventfns",
    "MLFN_PLATFORM_SERVER": "runtime.server:run",
    "MLFN_PLATFORM_PRELOAD": "flask",
    "MLFN_PLATFORM_EVENTING": "true",
    "MLFN_PARTITIONS": "2",
    "MLFN_SESSION_TIMEOUT_MS": "2000",
    "MLFN_PLATFORM_SCALE_TO_ZERO_GRACE_SECONDS": "30",
}


def produce(bootstrap: str, numbers: Iterable[int], rate: float | None = None) -> None:
    with EventProducer(bootstrap, partitions=2) as p:
        p.stream(TOPIC, ({"n": n} for n in numbers), rate=rate, key_of=lambda v: str(v["n"] % 8))


def stored(home: Path) -> Counter[int]:
    """How many rows each ``n`` has."""
    path = home / "datasets" / f"{DATASET}.sqlite3"
    if not path.exists():
        return Counter()
    with Dataset(DATASET, path) as ds:
        return Counter(int(v) for v in ds.read(labelled_only=False).y)


def duplicates(home: Path) -> int:
    with Dataset(DATASET, home / "datasets" / f"{DATASET}.sqlite3") as ds:
        return ds.duplicates()


def wait_stored(home: Path, n: int, timeout: float = 60) -> Counter[int]:
    found: Counter[int] = wait_for(
        lambda: (c := stored(home)) and len(c) >= n and c, timeout, f"{n} distinct rows stored"
    )
    return found


def eventing(platform: Platform) -> dict[str, Any]:
    ev: dict[str, Any] = platform.status()["eventing"]
    return ev


def source_stats(platform: Platform) -> dict[str, Any]:
    found: dict[str, Any] = next(
        d for d in eventing(platform)["dispatchers"] if d["name"] == "store"
    )
    return found


def assert_exactly_once(home: Path, numbers: range) -> None:
    rows = Counter({n: c for n, c in stored(home).items() if n >= 0})
    assert set(rows) == set(numbers), f"lost: {sorted(set(numbers) - set(rows))[:20]}"
    extra = {n: c for n, c in rows.items() if c != 1}
    assert not extra, f"stored more than once: {extra}"


def assert_still_serving(platform: Platform, bootstrap: str) -> None:
    """A CloudEvent POSTed through the gateway is stored; nothing dead-lettered; dups agree."""
    msg = events.to_http_binary(events.new_event("rel.probe", "/test", {"n": -1}))
    answer = requests.post(f"{platform.url}/store/", data=msg.body, headers=msg.headers, timeout=30)
    assert answer.status_code < 300, answer.text
    assert read_topic(bootstrap, DLQ, quiet_s=0.1) == [], "records were dead-lettered"
    assert source_stats(platform)["dead_lettered"] == 0
    status_dups = eventing(platform)["datasets"][DATASET]["duplicates"]
    assert status_dups == duplicates(platform.home)
    print(f"\n{len(stored(platform.home))} rows, {status_dups} duplicate(s) dropped")


def test_restart_keeps_unconsumed_records_and_new_records_are_not_taken_for_old(
    tmp_path: Path,
) -> None:
    """The bug of issue 15: a second session's records were dropped as duplicates of the first's."""
    home = tmp_path / "home"
    with start_platform(tmp_path, **ENV) as first:
        bootstrap = eventing(first)["bootstrap"]
        produce(bootstrap, range(200))
        wait_stored(home, 200)
        (home / "gate").touch()  # from now on every delivery fails and is retried
        produce(bootstrap, range(200, 260))
        wait_for(
            lambda: source_stats(first)["consumed"] >= 260 and source_stats(first)["retried"],
            30,
            "the held records consumed and retried",
        )
    out = first.output()
    assert "unconsumed saved to" in out, out[-2000:]
    backlog = home / "platform" / "backlog.jsonl"
    assert len(backlog.read_text().splitlines()) - 1 >= 60 - 2  # header; 2 may be in flight
    assert len(stored(home)) <= 202
    (home / "gate").unlink()

    with start_platform(tmp_path, **ENV) as second:
        bootstrap = eventing(second)["bootstrap"]
        assert not backlog.exists(), "the backlog was not replayed"
        # new records land on offsets the first broker gave to records stored already
        produce(bootstrap, range(260, 380))
        wait_stored(home, 380)
        assert_exactly_once(home, range(380))
        assert_still_serving(second, bootstrap)


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _instance_pid(platform: Platform, function: str, not_from: int | None = None) -> int:
    def ready() -> int | None:
        for rev in platform.revisions(function):
            for inst in rev["instances"]:
                pid = inst.get("pid")
                if inst["state"] == "ready" and pid and alive(pid) and _parent(pid) != not_from:
                    return int(pid)
        return None

    pid: int = wait_for(ready, 30, f"a ready instance of {function}", ignore=(OSError,))
    return pid


def test_sigkill_of_instance_zygote_and_mlfn_dev_mid_stream_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL an instance, its zygote, then `mlfn dev` itself while records stream in.

    The zygote and instance come back; the broker outlives `mlfn dev` (a session of its
    own) and the next `mlfn dev` adopts it and delivers what was left.
    """
    home = tmp_path / "home"
    total = 1200
    with start_platform(tmp_path, **ENV) as first:
        bootstrap = eventing(first)["bootstrap"]
        broker_pid = json.loads((home / "platform" / "broker.json").read_text())["pid"]
        producer = threading.Thread(target=produce, args=(bootstrap, range(total), 500))
        producer.start()
        try:
            wait_stored(home, 200)
            instance = _instance_pid(first, "store")
            zygote = _parent(instance)
            os.kill(instance, signal.SIGKILL)
            wait_stored(home, 450)
            os.kill(zygote, signal.SIGKILL)
            _instance_pid(first, "store", not_from=zygote)  # a new zygote forked a new one
            wait_stored(home, 700)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(10)
        finally:
            producer.join()  # the broker takes every record meanwhile
        assert alive(broker_pid), "the broker should outlive a SIGKILL of mlfn dev"
        assert len(stored(home)) < total, "the stream finished before the kill: raise total"

    with start_platform(tmp_path, **ENV) as second:
        assert eventing(second)["bootstrap"] == bootstrap, "the broker was not adopted"
        wait_stored(home, total, 90)
        assert_exactly_once(home, range(total))
        assert_still_serving(second, bootstrap)
    assert not alive(broker_pid), "a clean stop stops the adopted broker"
