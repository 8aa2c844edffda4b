"""Dynamic batching: concurrent requests coalesce into one call of the model.

A :class:`Batcher` keeps one queue of items. Whoever submits while the model is idle
becomes the *leader*: it closes a batch and calls the model in its own thread (no
hand-off to a collector thread, so a lone request pays nothing for batching). While the
model runs, other requests queue up; the next batch starts as soon as the model is free
and takes everything queued, up to ``max_batch_size``. A batch waits for more items
(at most ``max_wait``) only when company is expected: requests *announced* (accepted and
being decoded) but not yet submitted, or as many requests as the previous batch held
(sustained concurrent load). At concurrency 1 the previous batch held one request and
nothing is announced, so a lone request never waits for company that is not coming. When a leader's own items are done and items remain, it hands
leadership to the owner of the oldest queued item.

Each submitted request gets its results back in order. A result list of the wrong length
or an exception fails every request of that batch with the same error.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from runtime.errors import BatchError

__all__ = ["Batcher", "check_results"]

T = TypeVar("T")
R = TypeVar("R")


def check_results(results: Any, expected: int) -> Sequence[Any]:
    """Raise :class:`BatchError` unless ``results`` is a list of ``expected`` items."""
    if not isinstance(results, list | tuple):
        raise BatchError(
            f"the function returned {type(results).__name__}; it must return a list with "
            f"one response per request ({expected} here), in order"
        )
    if len(results) != expected:
        raise BatchError(
            f"the function returned {len(results)} results for a batch of {expected} "
            "requests; return exactly one response per request, in order"
        )
    return results


class _Ticket:
    """One submitter's share: its results, error, and a wake-up event."""

    __slots__ = ("error", "event", "promoted", "remaining", "results", "tag")

    def __init__(self, n: int) -> None:
        self.results: list[Any] = [None] * n
        self.remaining = n
        self.error: BaseException | None = None
        self.tag: object = None
        self.promoted = False
        self.event = threading.Event()


class Batcher(Generic[T, R]):
    """Coalesces items from concurrent callers into calls of ``call``.

    Args:
        call: takes a list of items and returns ``(results, tag)``: one result per item,
            in order, and a tag (for example the model version) handed back to callers.
        max_batch_size: most items in one call.
        max_wait_s: longest a batch waits for announced items before it runs.
        clock: monotonic clock in seconds (injected by tests).
        on_batch: called with each batch's size (metrics).
        pause: called by a leader before it closes each batch. Under cooperative
            scheduling (gevent) nothing else runs while the model does, so the leader
            must yield here (``gevent.sleep``) to let requests that are ready reach the
            queue; with real threads leave it None (they reach it while the model runs).

    Example:
        >>> b = Batcher(lambda xs: ([x * 2 for x in xs], "v1"), max_batch_size=8, max_wait_s=0.005)
        >>> b.run([1, 2, 3])
        ([2, 4, 6], 'v1')
    """

    def __init__(
        self,
        call: Callable[[list[T]], tuple[Sequence[R], object]],
        max_batch_size: int,
        max_wait_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_batch: Callable[[int], None] | None = None,
        pause: Callable[[], object] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self._call = call
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._on_batch = on_batch
        self._pause = pause
        self._lock = threading.Lock()
        self._arrival = threading.Condition(self._lock)
        self._queue: deque[tuple[T, _Ticket, int]] = deque()
        self._busy = False
        self._announced = 0
        self._last_size = 1
        self.collecting = False  # a leader is waiting for company (tests observe this)

    @property
    def announced(self) -> int:
        return self._announced

    def announce(self) -> None:
        """A request was accepted and will submit soon: a forming batch may wait for it."""
        with self._lock:
            self._announced += 1

    def withdraw(self) -> None:
        """An announced request will not submit (it failed to decode)."""
        with self._lock:
            self._announced = max(0, self._announced - 1)
            self._arrival.notify()  # rare (a decode failed): let the leader re-check

    def run(self, items: Sequence[T], *, announced: bool = False) -> tuple[list[R], object]:
        """Submit ``items``, block until all are done; their results in order, and the tag.

        Raises:
            BatchError: the call returned the wrong number of results.
            Exception: whatever the call raised, for every request of that batch.
        """
        ticket = _Ticket(len(items))
        if not items:
            if announced:
                self.withdraw()
            return [], None
        with self._lock:
            if announced:
                self._announced = max(0, self._announced - 1)
            for i, item in enumerate(items):
                self._queue.append((item, ticket, i))
            lead = not self._busy
            if lead:
                self._busy = True
            elif self.collecting and self._full():
                self._arrival.notify()  # only when the waiting leader would close the batch
        while True:
            if lead:
                self._lead(ticket)
            ticket.event.wait()
            with self._lock:
                if ticket.remaining == 0:
                    break
                # promoted by the previous leader: busy stays set across the hand-off
                ticket.promoted = False
                ticket.event.clear()
                lead = True
        if ticket.error is not None:
            raise ticket.error
        return ticket.results, ticket.tag

    def _lead(self, ticket: _Ticket) -> None:
        while True:
            if self._pause is not None:
                self._pause()
            with self._lock:
                batch = self._close_batch()
            self._execute(batch)
            with self._lock:
                if not self._queue:
                    self._busy = False
                    return
                if ticket.remaining == 0:
                    nxt = self._queue[0][1]
                    nxt.promoted = True
                    nxt.event.set()
                    return

    def _full(self) -> bool:
        """Under the lock: nothing more is expected (or there is no room for it)."""
        n = len(self._queue)
        return n >= self.max_batch_size or (self._announced == 0 and n >= self._last_size)

    def _close_batch(self) -> list[tuple[T, _Ticket, int]]:
        """Under the lock: wait (bounded) for expected items, then take up to the max."""
        deadline: float | None = None
        while not self._full():
            now = self._clock()
            if deadline is None:
                deadline = now + self.max_wait_s
            if now >= deadline:
                break
            self.collecting = True
            self._arrival.wait(deadline - now)
            self.collecting = False
        n = min(len(self._queue), self.max_batch_size)
        batch = [self._queue.popleft() for _ in range(n)]
        # a batch cut at max_batch_size says nothing about concurrency: don't wait next time
        self._last_size = n if not self._queue else 1
        return batch

    def _execute(self, batch: list[tuple[T, _Ticket, int]]) -> None:
        items = [item for item, _, _ in batch]
        error: BaseException | None = None
        results: Sequence[Any] = ()
        tag: object = None
        if self._on_batch is not None:
            self._on_batch(len(items))
        try:
            out, tag = self._call(items)
            results = check_results(out, len(items))
        except BaseException as err:  # every request of the batch gets the same error
            error = err
        with self._lock:
            for k, (_, ticket, i) in enumerate(batch):
                if error is not None:
                    ticket.error = ticket.error or error
                else:
                    ticket.results[i] = results[k]
                    ticket.tag = tag
                ticket.remaining -= 1
                if ticket.remaining == 0:
                    ticket.event.set()
