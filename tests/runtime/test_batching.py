"""The batcher, driven with events and an injected clock (no sleeps)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from runtime import BatchError
from runtime.server.batching import Batcher

pytestmark = pytest.mark.unit


class Model:
    """Doubles its inputs; records batches; can be held busy with a gate."""

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        if not gated:
            self.gate.set()

    def __call__(self, items: list[int]) -> tuple[list[int], str]:
        self.batches.append(list(items))
        self.entered.release()
        assert self.gate.wait(10), "test never opened the gate"
        return [i * 2 for i in items], "v7"


def _submit(pool: ThreadPoolExecutor, b: Batcher[int, int], items: list[int]) -> Future[Any]:
    return pool.submit(b.run, items)


def _until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_lone_request_does_not_wait_for_max_wait() -> None:
    model = Model()
    b = Batcher(model, max_batch_size=8, max_wait_s=30.0)
    started = time.monotonic()
    assert b.run([1, 2]) == ([2, 4], "v7")
    assert time.monotonic() - started < 5  # far below the 30 s max_wait
    assert model.batches == [[1, 2]]


def test_requests_queue_while_the_model_is_busy_and_run_as_one_batch() -> None:
    model = Model(gated=True)
    b = Batcher(model, max_batch_size=8, max_wait_s=30.0)
    with ThreadPoolExecutor(8) as pool:
        first = _submit(pool, b, [1])
        assert model.entered.acquire(timeout=5)  # batch [1] is running
        rest = [_submit(pool, b, [n]) for n in (2, 3, 4)]
        _until(lambda: len(b._queue) == 3)
        model.gate.set()
        assert first.result(5) == ([2], "v7")
        assert sorted(f.result(5)[0][0] for f in rest) == [4, 6, 8]
    assert model.batches[0] == [1]
    assert sorted(model.batches[1]) == [2, 3, 4]


def test_batches_close_at_max_batch_size_and_keep_each_callers_order() -> None:
    model = Model(gated=True)
    b = Batcher(model, max_batch_size=3, max_wait_s=30.0)
    with ThreadPoolExecutor(4) as pool:
        first = _submit(pool, b, [0])
        assert model.entered.acquire(timeout=5)
        big = _submit(pool, b, [1, 2, 3, 4, 5, 6, 7])
        _until(lambda: len(b._queue) == 7)
        model.gate.set()
        first.result(5)
        assert big.result(5) == ([2, 4, 6, 8, 10, 12, 14], "v7")
    assert [len(x) for x in model.batches] == [1, 3, 3, 1]


def test_an_announced_request_is_waited_for_and_its_arrival_closes_the_batch() -> None:
    model = Model()
    b = Batcher(model, max_batch_size=2, max_wait_s=30.0)
    b.announce()
    b.announce()
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(b.run, [1], announced=True)
        _until(lambda: b.collecting)
        c = pool.submit(b.run, [2], announced=True)  # this arrival closes the batch
        assert a.result(5)[0] == [2] and c.result(5)[0] == [4]
    assert model.batches == [[1, 2]]


def test_the_batch_stops_waiting_at_the_deadline_of_the_injected_clock() -> None:
    now = [100.0]
    model = Model()
    b = Batcher(model, max_batch_size=8, max_wait_s=0.5, clock=lambda: now[0])
    b.announce()  # announced twice, only one will come
    b.announce()
    with ThreadPoolExecutor(1) as pool:
        a = pool.submit(b.run, [1], announced=True)
        _until(lambda: b.collecting)
        now[0] = 101.0  # past the deadline; a withdrawal wakes the waiting leader
        b.withdraw()
        assert a.result(5) == ([2], "v7")


def test_wrong_length_fails_every_request_of_the_batch() -> None:
    gate = threading.Event()

    def short(items: list[int]) -> tuple[list[int], None]:
        assert gate.wait(5)
        return items[:-1], None

    b: Batcher[int, int] = Batcher(short, max_batch_size=8, max_wait_s=0)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(b.run, [n]) for n in range(3)]
        _until(lambda: len(b._queue) == 2)
        gate.set()
        for f in futures:
            with pytest.raises(BatchError, match=r"returned \d results for a batch of \d"):
                f.result(5)


def test_an_exception_fails_the_batch_and_the_batcher_keeps_working() -> None:
    calls = []

    def flaky(items: list[int]) -> tuple[list[int], None]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return items, None

    b: Batcher[int, int] = Batcher(flaky, max_batch_size=8, max_wait_s=0)
    with pytest.raises(RuntimeError, match="model exploded"):
        b.run([1])
    assert b.run([5]) == ([5], None)


def test_non_list_results_are_a_clear_error() -> None:
    b: Batcher[int, int] = Batcher(lambda xs: (None, None), max_batch_size=2, max_wait_s=0)  # type: ignore[arg-type,return-value]
    with pytest.raises(BatchError, match="must return a list"):
        b.run([1])


def test_under_sustained_load_a_batch_waits_for_as_many_as_the_last_one() -> None:
    now = [0.0]
    model = Model(gated=True)
    b = Batcher(model, max_batch_size=8, max_wait_s=30.0, clock=lambda: now[0])
    with ThreadPoolExecutor(8) as pool:
        first = _submit(pool, b, [0])
        assert model.entered.acquire(timeout=5)
        pair = [_submit(pool, b, [n]) for n in (1, 2)]
        _until(lambda: len(b._queue) == 2)
        model.gate.set()  # the next batch is [1, 2]: concurrency 2 is now expected
        for f in [first, *pair]:
            f.result(5)
        a = _submit(pool, b, [3])
        _until(lambda: len(b._queue) == 1)  # the leader waits for a second request...
        c = _submit(pool, b, [4])  # ...whose arrival closes the batch
        assert a.result(5)[0] == [6] and c.result(5)[0] == [8]
        lone = _submit(pool, b, [5])  # expects 2 again: released by the clock deadline
        _until(lambda: b.collecting)
        now[0] = 31.0
        b.withdraw()  # wakes the waiting leader, which sees the deadline passed
        assert lone.result(5)[0] == [10]
    assert model.batches == [[0], [1, 2], [3, 4], [5]]
