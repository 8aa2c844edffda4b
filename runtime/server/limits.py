"""The concurrency limit (Knative's ``containerConcurrency``), its queue, and shedding.

* :class:`ConcurrencyLimiter`: at most ``limit`` requests run, ``queue_depth`` more wait.
* :class:`ShedReport`: every shed request is counted (``mlfn_requests_shed_total``); the
  log says so at most once per interval, with the count since the last line.
* :class:`Paused`: the body of a shed answer. Under gevent, once it is sent, the
  connection it went out on is not read again for as long as its ``Retry-After`` says:
  a client that honours it never notices, and one that does not (a load generator, a
  retry loop) waits for its next answer instead of taking the event loop from the
  requests already admitted. Without it each excess connection is answered as fast as
  the loop turns; answering costs about half of serving here (gunicorn parses and
  writes either way), and at ten times the limit the admitted requests starve.

How long: :meth:`ConcurrencyLimiter.retry_after` spreads the resting connections so that
shed answers stay at most :data:`SHED_SHARE` of the requests completed per second, between
:data:`RETRY_AFTER_S` and :data:`MAX_RETRY_AFTER_S`. The ceiling is what still bounds the
shed answers when throughput is low (a slow model, a starved machine): 1,000 excess
connections resting 30 s come back at 33/s.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from runtime.server.errors import Overloaded

__all__ = [
    "MAX_RETRY_AFTER_S",
    "RETRY_AFTER_S",
    "SHED_SHARE",
    "ConcurrencyLimiter",
    "Paused",
    "ShedPacer",
    "ShedReport",
    "cooperative_sleep",
]

RETRY_AFTER_S = 1
"""The shortest ``Retry-After`` of a shed answer (seconds)."""

MAX_RETRY_AFTER_S = 30
"""The longest ``Retry-After`` of a shed answer (seconds)."""

SHED_SHARE = 0.1
"""Shed answers per completed request, at most, while connections rest."""

SHED_LOG_INTERVAL_S = 10.0
"""At most one log line about shedding per interval."""


class ShedPacer:
    """How long shed clients wait, from this process's completion rate (see the module).

    ``clock`` (monotonic seconds) times the completion rate; tests inject one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.resting = 0  # connections resting after a shed answer
        self._completed = 0  # in the current window
        self._clock = clock
        self._window_start = clock()
        self._rate = 0.0  # completions per second in the last window of >= 1 s

    def completed(self) -> None:
        """One admitted request finished."""
        if self._clock() - self._window_start >= 1.0:
            self.completion_rate()  # close the window: an idle one must not dilute
        self._completed += 1

    def completion_rate(self) -> float:
        """Requests completed per second: in the last window of a second or more, or in
        the current one if higher (the first second of a burst after an idle spell)."""
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._rate = self._completed / elapsed
            self._completed = 0
            self._window_start = now
            return self._rate
        return max(self._rate, self._completed / max(elapsed, 0.1))

    def retry_after(self) -> int:
        """Seconds a shed client should wait (and its connection rests): the resting
        connections, spread so that their next requests arrive at no more than
        :data:`SHED_SHARE` of the completion rate."""
        per_second = max(1.0, SHED_SHARE * self.completion_rate())
        wait = math.ceil((self.resting + 1) / per_second)
        return max(RETRY_AFTER_S, min(MAX_RETRY_AFTER_S, wait))

    def rest(self, seconds: float, sleep: Callable[[float], object]) -> None:
        """Rest a connection after a shed answer (counted in :meth:`retry_after`)."""
        self.resting += 1
        try:
            sleep(seconds)
        finally:
            self.resting -= 1


class ConcurrencyLimiter:
    """At most ``limit`` requests run at once; up to ``queue_depth`` more wait.

    A request that finds the queue full, or waits longer than ``timeout_s``, gets
    :class:`Overloaded` (503 with ``Retry-After``). ``limit=0`` means unlimited.
    ``clock`` (monotonic seconds) times the completion rate; tests inject one.

    Example:
        >>> lim = ConcurrencyLimiter(limit=1, queue_depth=0, timeout_s=1.0)
        >>> with lim.slot():
        ...     pass
    """

    def __init__(
        self,
        limit: int,
        queue_depth: int,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.queue_depth = queue_depth
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._running = 0
        self._waiting = 0
        self.pacer = ShedPacer(clock)

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def resting(self) -> int:
        """Connections resting after a shed answer."""
        return self.pacer.resting

    @property
    def full(self) -> bool:
        """A request arriving now would be shed: every slot and queue place is taken."""
        if self.limit <= 0:
            return False
        return (self._running >= self.limit or self._waiting > 0) and (
            self._waiting >= self.queue_depth
        )

    @property
    def saturated(self) -> bool:
        """Every slot is taken: a request arriving now waits in the queue or is shed."""
        return 0 < self.limit <= self._running

    def completion_rate(self) -> float:
        """Requests completed per second (see :class:`ShedPacer`)."""
        return self.pacer.completion_rate()

    def retry_after(self) -> int:
        """Seconds a shed client should wait (see :class:`ShedPacer`)."""
        return self.pacer.retry_after()

    def rest(self, seconds: float, sleep: Callable[[float], object]) -> None:
        """Rest a connection after a shed answer (counted in :meth:`retry_after`)."""
        self.pacer.rest(seconds, sleep)

    def overloaded(self) -> Overloaded:
        """The error of a request that finds the queue full."""
        retry_after = self.retry_after()
        return Overloaded(
            f"{self._running} requests are running (containerConcurrency "
            f"{self.limit}) and {self._waiting} are queued (queue depth "
            f"{self.queue_depth}); retry after {retry_after}s or raise MLFN_QUEUE_DEPTH",
            retry_after=retry_after,
            reason="queue_full",
        )

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
                self.pacer.completed()
                self._cond.notify()

    def _acquire(self) -> None:
        with self._cond:
            if self._running < self.limit and self._waiting == 0:
                self._running += 1
                return
            if self._waiting >= self.queue_depth:
                raise self.overloaded()
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
                            retry_after=self.retry_after(),
                            reason="queue_timeout",
                        )
                    self._cond.wait(left)
                self._running += 1
            finally:
                self._waiting -= 1


class ShedReport:
    """Counts shed requests and logs about them at most once per ``interval_s``.

    Args:
        count: called with the reason of each shed request (a Prometheus counter).
        log: where the summary lines go (warning level).
        interval_s: the shortest time between two lines.
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        count: Callable[[str], None],
        log: logging.Logger,
        interval_s: float = SHED_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count
        self._log = log
        self.interval_s = interval_s
        self._clock = clock
        self._next_line = float("-inf")
        self._since_line = 0

    def shed(self, err: Overloaded) -> None:
        self._count(err.reason)
        self._since_line += 1
        now = self._clock()
        if now < self._next_line:
            return
        self._log.warning(
            "shedding load: %d request(s) answered 503 since the last line like this one "
            "(the latest: %s); counted in mlfn_requests_shed_total, next line in %gs at most",
            self._since_line,
            err.message,
            self.interval_s,
            extra={"shed": self._since_line, "reason": err.reason},
        )
        self._since_line = 0
        self._next_line = now + self.interval_s


class Paused:
    """A WSGI body that, once sent, rests its connection (``close`` calls ``rest``).

    gunicorn calls ``close`` after the last byte went out and before it reads the next
    request on that connection. Resting must be cooperative (``gevent.sleep``): only
    under gevent does a resting connection cost a timer rather than a thread.
    """

    def __init__(self, body: bytes, rest: Callable[[], object]) -> None:
        self._body = body
        self._rest = rest

    def __iter__(self) -> Iterator[bytes]:
        yield self._body

    def close(self) -> None:
        self._rest()


def cooperative_sleep() -> Callable[[float], object] | None:
    """``gevent.sleep`` when gevent has patched threading (gunicorn's gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return None
    sleep: Callable[[float], object] = sys.modules["gevent"].sleep
    return sleep
