"""The concurrency limit (Knative's ``containerConcurrency``) with a bounded wait queue."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from runtime.server.errors import Overloaded

__all__ = ["ConcurrencyLimiter"]


class ConcurrencyLimiter:
    """At most ``limit`` requests run at once; up to ``queue_depth`` more wait.

    A request that finds the queue full, or waits longer than ``timeout_s``, gets
    :class:`Overloaded` (503 with ``Retry-After``). ``limit=0`` means unlimited.

    Example:
        >>> lim = ConcurrencyLimiter(limit=1, queue_depth=0, timeout_s=1.0)
        >>> with lim.slot():
        ...     pass
    """

    def __init__(self, limit: int, queue_depth: int, timeout_s: float) -> None:
        self.limit = limit
        self.queue_depth = queue_depth
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._running = 0
        self._waiting = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.limit <= 0:
            yield
            return
        self._acquire()
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify()

    def _acquire(self) -> None:
        retry_after = max(1, math.ceil(self.timeout_s))
        with self._cond:
            if self._running < self.limit and self._waiting == 0:
                self._running += 1
                return
            if self._waiting >= self.queue_depth:
                raise Overloaded(
                    f"{self._running} requests are running (containerConcurrency "
                    f"{self.limit}) and {self._waiting} are queued (queue depth "
                    f"{self.queue_depth}); retry later or raise MLFN_QUEUE_DEPTH",
                    retry_after=retry_after,
                )
            self._waiting += 1
            deadline = time.monotonic() + self.timeout_s
            try:
                while self._running >= self.limit:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Overloaded(
                            f"waited {self.timeout_s:g}s for one of {self.limit} slots "
                            "(containerConcurrency); retry later or raise "
                            "MLFN_QUEUE_TIMEOUT_SECONDS",
                            retry_after=retry_after,
                        )
                    self._cond.wait(left)
                self._running += 1
            finally:
                self._waiting -= 1
