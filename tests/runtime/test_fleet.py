"""The table the worker processes share: one exact limit, readiness, swaps, no leaked slot."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
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


def _hold(lim: Any, n: int) -> list[Any]:
    slots = [lim.slot() for _ in range(n)]
    for s in slots:
        s.__enter__()
    return slots


def _queue(lim: Any, name: str, order: list[str]) -> tuple[threading.Thread, threading.Event]:
    """A request of this process that waits for a slot, notes its turn, and ends when told."""
    done = threading.Event()

    def run() -> None:
        with lim.slot():
            order.append(name)
            done.wait(10)

    t = threading.Thread(target=run, name=f"waiter-{name}")
    t.start()
    return t, done


def test_an_ending_request_hands_its_slot_to_the_oldest_waiter_here() -> None:
    fleet = Fleet(workers=2)
    fleet.join()
    lim = fleet.limiter(1, 2, 10.0)
    (held,) = _hold(lim, 1)
    order: list[str] = []
    first, done_first = _queue(lim, "first", order)
    wait_for(lambda: fleet.totals() == (1, 1), 5, "the first waiter to queue")
    second, done_second = _queue(lim, "second", order)
    wait_for(lambda: fleet.totals() == (1, 2), 5, "the second waiter to queue")
    assert fleet.queuing() == 1
    held.__exit__(None, None, None)  # handed on: the running total never drops
    wait_for(lambda: order == ["first"], 5, "the oldest waiter to get the slot")
    assert fleet.totals() == (1, 1)
    done_first.set()
    wait_for(lambda: order == ["first", "second"], 5, "the next waiter to get the slot")
    done_second.set()
    first.join(5)
    second.join(5)
    assert fleet.totals() == (0, 0) and fleet.queuing() == 0


def test_a_worker_beyond_its_share_frees_slots_for_the_queue_of_another() -> None:
    """Two workers with waiters: each keeps at most half the slots (plus a margin of 1
    of 4), so the slots this one frees go to the other's queue, not back to its own."""
    fleet = Fleet(workers=2)
    fleet.join()
    lim = fleet.limiter(4, 8, 10.0)
    held = _hold(lim, 4)
    order: list[str] = []
    mine, done_mine = _queue(lim, "here", order)
    wait_for(lambda: fleet.totals() == (4, 1), 5, "the waiter here to queue")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: another worker with one waiter
        try:
            os.close(r)
            fleet.join()
            with fleet.limiter(4, 8, 10.0).slot():
                os.write(w, b"x")
                signal.pause()
        finally:
            os._exit(0)
    os.close(w)
    try:
        wait_for(lambda: fleet.queuing() == 2, 5, "the other worker's waiter to queue")
        held.pop().__exit__(None, None, None)  # 3 left here: beyond 4 / 2 + 1, freed
        wait_for(lambda: select.select([r], [], [], 0)[0], 5, "the other worker's poller")
        assert os.read(r, 1) == b"x"  # it took the freed slot
        assert order == [] and fleet.totals() == (4, 1)
        held.pop().__exit__(None, None, None)  # 2 left here: within the share, handed on
        wait_for(lambda: order == ["here"], 5, "the waiter here to get the next slot")
    finally:
        os.close(r)
        _reap(pid)
        fleet.leave(pid)
    done_mine.set()
    mine.join(5)
    for s in held:
        s.__exit__(None, None, None)
    assert fleet.totals() == (0, 0) and fleet.queuing() == 0


def test_many_requests_in_two_workers_never_run_beyond_the_limit() -> None:
    fleet = Fleet(workers=2)
    fleet.join()
    limit, per_thread, threads = 3, 30, 8
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: the same load in another worker
        code = 1
        try:
            os.close(r)
            fleet.join()
            code = 0 if _hammer(fleet, limit, per_thread, threads) else 1
            os.write(w, b"x")
        finally:
            os._exit(code)
    os.close(w)
    try:
        assert _hammer(fleet, limit, per_thread, threads)
        assert os.read(r, 1) == b"x"
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0, "the other worker saw more than the limit run"
    finally:
        os.close(r)
    fleet.leave(pid)
    assert fleet.totals() == (0, 0) and fleet.queuing() == 0


def _hammer(fleet: Fleet, limit: int, per_thread: int, threads: int) -> bool:
    """``threads`` threads each run ``per_thread`` requests; True if every one ran within
    the limit (as the table counts) and none was refused (the queue holds them all)."""
    lim = fleet.limiter(limit, 2 * threads, 10.0)
    bad: list[Any] = []

    def run() -> None:
        for _ in range(per_thread):
            try:
                with lim.slot():
                    if fleet.totals()[0] > limit:
                        bad.append(fleet.totals())
                    time.sleep(0.0005)  # a request that takes a little while
            except Overloaded as err:
                bad.append(err)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    return not bad and not any(t.is_alive() for t in pool)


class _Killed(BaseException):
    """What killing a greenlet raises in it (GreenletExit is a BaseException too)."""


def test_a_waiter_killed_while_it_waits_leaves_no_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.server import fleet as fleet_module

    class Doomed(fleet_module._Waiter):
        def __init__(self, wake: fleet_module._Wake, deadline: float) -> None:
            class Wake:
                def acquire(self) -> bool:
                    raise _Killed

                def release(self) -> None:
                    wake.release()

            super().__init__(Wake(), deadline)

    monkeypatch.setattr(fleet_module, "_Waiter", Doomed)
    fleet = Fleet(workers=2)
    fleet.join()
    lim = fleet.limiter(1, 2, 10.0)
    (held,) = _hold(lim, 1)
    with pytest.raises(_Killed), lim.slot():
        pass
    assert fleet.totals() == (1, 0) and fleet.queuing() == 0 and not lim._waiters
    held.__exit__(None, None, None)
    assert fleet.totals() == (0, 0)


def test_a_waiter_whose_wait_runs_out_is_shed_and_leaves_no_count() -> None:
    """No timer per waiter: the poller wakes a waiter once its ``timeout_s`` is up."""
    fleet = Fleet(workers=2)
    fleet.join()
    lim = fleet.limiter(1, 2, 0.2)
    (held,) = _hold(lim, 1)
    started = time.monotonic()
    with pytest.raises(Overloaded) as caught, lim.slot():
        pass
    waited = time.monotonic() - started
    assert caught.value.reason == "queue_timeout" and "waited 0.2s" in caught.value.message
    assert waited >= 0.2
    assert fleet.totals() == (1, 0) and fleet.queuing() == 0 and not lim._waiters
    held.__exit__(None, None, None)
    assert fleet.totals() == (0, 0)
    with lim.slot():  # the poller is gone with the last waiter; a new one comes back
        assert fleet.totals() == (1, 0)


def test_a_lock_held_for_a_moment_is_taken_without_a_turn_of_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runtime.server import fleet as fleet_module

    fleet = Fleet(workers=1)
    pauses: list[float] = []
    fleet._yield = pauses.append  # what gevent's sleep is in a worker
    busy = iter([False, False, False, True])  # held for three tries, then let go
    monkeypatch.setattr(fleet, "_try_lock", lambda: next(busy))
    monkeypatch.setattr(fleet_module, "LOCK_SPIN_S", 3600.0)
    fleet._lock()
    assert pauses == []  # taken while trying again at once
    fleet._local.release()

    busy = iter([False] * 5 + [True])
    monkeypatch.setattr(fleet, "_try_lock", lambda: next(busy))
    monkeypatch.setattr(fleet_module, "LOCK_SPIN_S", 0.0)  # still held: the greenlets run
    fleet._lock()
    assert pauses == [0, 0, 0, fleet_module.LOCK_BACKOFF_S, fleet_module.LOCK_BACKOFF_S]
    fleet._local.release()
