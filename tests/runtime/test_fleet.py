"""The table the worker processes share: one exact limit, readiness, swaps, no leaked slot."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from runtime.server.errors import Overloaded
from runtime.server.fleet import Fleet
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.unit


def _child(fleet: Fleet, hold: int, limit: int) -> int:
    """Fork a worker that joins, takes ``hold`` slots, says so, and waits to be killed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            fleet.join()
            lim = fleet.limiter(limit, 0, 1.0)
            slots = [lim.slot() for _ in range(hold)]
            for s in slots:
                s.__enter__()
            fleet.set_ready()
            os.write(w, b"x")
            signal.pause()
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    return pid


def _reap(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_the_limit_counts_every_process_and_a_dead_one_leaks_nothing() -> None:
    fleet = Fleet(workers=2)
    pid = _child(fleet, hold=2, limit=3)
    fleet.join()
    lim = fleet.limiter(3, 0, 1.0)
    assert fleet.totals() == (2, 0)
    with lim.slot():  # the third slot, in this process
        assert fleet.totals() == (3, 0)
        with pytest.raises(Overloaded, match="containerConcurrency 3"), lim.slot():
            pass
    _reap(pid)  # killed holding two slots
    fleet.leave(pid)  # what the gunicorn master does when it reaps a worker
    assert fleet.totals() == (0, 0) and fleet.members() == [os.getpid()]
    with lim.slot(), lim.slot(), lim.slot():
        assert fleet.totals() == (3, 0)


def test_a_waiter_gets_a_slot_freed_in_another_process() -> None:
    fleet = Fleet(workers=2)
    pid = _child(fleet, hold=1, limit=1)
    fleet.join()
    lim = fleet.limiter(1, 1, 5.0)
    got: list[Any] = []
    import threading

    def wait_for_slot() -> None:
        with lim.slot():
            got.append(fleet.totals())

    t = threading.Thread(target=wait_for_slot)
    t.start()
    wait_for(lambda: fleet.totals() == (1, 1), 5, "the request to queue")
    with pytest.raises(Overloaded, match="queue depth 1"), lim.slot():
        pass
    _reap(pid)
    fleet.leave(pid)
    t.join(5)
    assert got == [(1, 0)] and fleet.totals() == (0, 0)


def test_ready_only_when_every_worker_is_and_swaps_are_seen_everywhere() -> None:
    fleet = Fleet(workers=2)
    fleet.join()
    fleet.set_ready()
    assert not fleet.all_ready() and fleet.ready_count() == 1
    pid = _child(fleet, hold=0, limit=1)  # joins and sets ready
    try:
        assert fleet.all_ready()
        before = fleet.generation
        fleet.announce_swap()
        assert fleet.generation == before + 1
    finally:
        _reap(pid)
        fleet.leave(pid)
    assert not fleet.all_ready()


class _Model:
    """A model handle that counts how often it was asked to check the store."""

    def __init__(self) -> None:
        self.refreshed = 0
        self.ready = True

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def current(self) -> Any:
        return None

    def refresh(self) -> bool:
        self.refreshed += 1
        return True


def test_a_swap_announced_by_another_worker_reaches_this_one() -> None:
    from runtime.registry import discover
    from runtime.server import create_app
    from runtime.settings import RuntimeSettings

    fn = discover("tests.runtime.userfns.echo_inference").get("summer")
    fleet = Fleet(workers=1)
    fleet.join()
    model = _Model()
    app = create_app(fn, RuntimeSettings(), model_opener=lambda f, s: model, fleet=fleet)
    try:
        assert app.wait_ready(10) and app.ready
        assert model.refreshed == 0
        fleet.announce_swap()  # as the worker that got mlfn.model.published does
        wait_for(lambda: model.refreshed == 1, 5, "the watcher to refresh the model")
    finally:
        app.close()
