"""What the worker processes of one server share: concurrency slots, readiness, model swaps.

``mlfn serve`` runs N gunicorn workers (one per CPU), each with its own app, model and
batcher. Three things must still hold for the server as a whole, so they live in one
small shared-memory table (:class:`Fleet`) that the gunicorn master creates before it
forks:

- **The concurrency limit is exact across workers** (Knative's ``containerConcurrency``
  and ``MLFN_QUEUE_DEPTH``): the running and waiting counts are totals over all
  workers, changed under one lock. :meth:`Fleet.limiter` gives each worker a
  :class:`SharedLimiter` with the same ``slot()`` as the in-process
  :class:`~runtime.server.limits.ConcurrencyLimiter`.
- **``/readyz`` says 200 only when every worker is ready** (each has loaded its model),
  so a probe that reaches one worker never admits traffic that another would refuse.
- **A model swap reaches every worker**: the worker that receives
  ``mlfn.model.published`` bumps a generation counter; the others see it within
  :data:`WATCH_SECONDS` and check the store.

The table is a file mapped ``MAP_SHARED`` (unlinked at once: nothing stays on disk);
its lock is a POSIX record lock (``lockf``) on the same file, which the kernel releases
when a worker dies holding it. Each worker owns a row (its pid and its own counts); when
gunicorn reaps a worker, the master subtracts that row from the totals, so a worker
killed mid-request (timeout, OOM) leaks no slot.

A single-worker server does not use any of this (the lean path).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from runtime.server.errors import Overloaded
from runtime.server.limits import ShedPacer

__all__ = ["WATCH_SECONDS", "Fleet", "SharedLimiter"]

WATCH_SECONDS = 0.1
"""How often a worker checks for slots freed elsewhere and for model swaps."""

_HEAD = struct.Struct("qqqq")  # running, waiting, generation, expected workers
_ROW = struct.Struct("qqqq")  # pid (0: free), running, waiting, ready


class Fleet:
    """The shared table of one server's workers. Create it in the master, before forking.

    Args:
        workers: how many workers the server runs (``/readyz`` waits for that many).
        rows: room for workers alive at once (gunicorn may start a replacement before
            the old one is reaped); default ``2 * workers + 2``.

    Example:
        >>> fleet = Fleet(workers=2)
        >>> fleet.join()  # in a worker, after the fork
        >>> fleet.set_ready(); fleet.all_ready()
        False
    """

    def __init__(self, workers: int, rows: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"a fleet needs at least one worker, got {workers}")
        self.workers = workers
        self.rows = rows or 2 * workers + 2
        size = _HEAD.size + self.rows * _ROW.size
        fd, path = tempfile.mkstemp(prefix="mlfn-fleet-")
        os.unlink(path)
        os.ftruncate(fd, size)
        self._fd = fd
        self._mem = mmap.mmap(fd, size, mmap.MAP_SHARED)
        self._mem[: _HEAD.size] = _HEAD.pack(0, 0, 0, workers)
        self._row: int | None = None
        # the lock between processes is lockf; this one keeps a worker's threads in turn
        # (record locks are per process, so two threads of one worker would both get it).
        # Made again in join(): after the fork, and after gevent patched threading.
        self._local = threading.Lock()

    # --- the lock --------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._local:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _head(self) -> tuple[int, int, int, int]:
        running, waiting, generation, expected = _HEAD.unpack_from(self._mem, 0)
        return running, waiting, generation, expected

    def _set_head(self, running: int, waiting: int, generation: int) -> None:
        _HEAD.pack_into(self._mem, 0, running, waiting, generation, self.workers)

    def _row_at(self, i: int) -> tuple[int, int, int, int]:
        pid, running, waiting, ready = _ROW.unpack_from(self._mem, _HEAD.size + i * _ROW.size)
        return pid, running, waiting, ready

    def _set_row(self, i: int, pid: int, running: int, waiting: int, ready: int) -> None:
        _ROW.pack_into(self._mem, _HEAD.size + i * _ROW.size, pid, running, waiting, ready)

    # --- membership (worker: join; master: leave) ------------------------------------

    def join(self) -> None:
        """Claim a row for this process (a worker, after the fork)."""
        pid = os.getpid()
        self._local = threading.Lock()
        with self._locked():
            free = None
            for i in range(self.rows):
                owner = self._row_at(i)[0]
                if owner == pid:
                    self._row = i
                    return
                if owner == 0 and free is None:
                    free = i
            if free is None:
                raise RuntimeError(
                    f"no free row in the fleet table ({self.rows} rows): more workers are "
                    "alive than it was sized for"
                )
            self._set_row(free, pid, 0, 0, 0)
            self._row = free

    def leave(self, pid: int) -> None:
        """Forget the worker ``pid`` (the master, when gunicorn reaped it): its slots free."""
        with self._locked():
            for i in range(self.rows):
                owner, running, waiting, _ = self._row_at(i)
                if owner == pid:
                    r, w, g, _ = self._head()
                    self._set_head(max(0, r - running), max(0, w - waiting), g)
                    self._set_row(i, 0, 0, 0, 0)

    def members(self) -> list[int]:
        """The pids of the workers in the table."""
        return [p for p in (self._row_at(i)[0] for i in range(self.rows)) if p]

    # --- readiness -------------------------------------------------------------------

    def set_ready(self) -> None:
        """This worker is ready (its model is loaded)."""
        i = self._mine()
        with self._locked():
            pid, running, waiting, _ = self._row_at(i)
            self._set_row(i, pid, running, waiting, 1)

    def all_ready(self) -> bool:
        """As many workers as the server runs are ready."""
        return self.ready_count() >= self.workers

    def ready_count(self) -> int:
        """Workers in the table that are ready."""
        rows = (self._row_at(i) for i in range(self.rows))
        return sum(1 for pid, _, _, ready in rows if pid and ready)

    # --- model swaps -----------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Bumped by :meth:`announce_swap`; a worker that sees it move checks its store."""
        return self._head()[2]

    def announce_swap(self) -> None:
        with self._locked():
            r, w, g, _ = self._head()
            self._set_head(r, w, g + 1)

    # --- slots -----------------------------------------------------------------------

    def _mine(self) -> int:
        if self._row is None:
            raise RuntimeError("this process has not joined the fleet; call Fleet.join() first")
        return self._row

    def totals(self) -> tuple[int, int]:
        """Requests running and waiting, over all workers."""
        r, w, _, _ = self._head()
        return r, w

    def _change(self, d_running: int, d_waiting: int) -> None:
        """Under the lock: move this worker's counts and the totals together."""
        i = self._mine()
        r, w, g, _ = self._head()
        self._set_head(r + d_running, w + d_waiting, g)
        pid, running, waiting, ready = self._row_at(i)
        self._set_row(i, pid, running + d_running, waiting + d_waiting, ready)

    def limiter(self, limit: int, queue_depth: int, timeout_s: float) -> SharedLimiter:
        return SharedLimiter(self, limit, queue_depth, timeout_s)


class SharedLimiter:
    """:class:`~runtime.server.limits.ConcurrencyLimiter`'s contract over all workers.

    At most ``limit`` requests run at once in the whole server, and at most
    ``queue_depth`` wait; a request finding the queue full or waiting past ``timeout_s``
    gets :class:`Overloaded`. A slot freed in this worker wakes a waiter here at once; one
    freed in another worker is found within :data:`WATCH_SECONDS` (waiters re-check).
    ``limit=0`` means unlimited.
    """

    def __init__(self, fleet: Fleet, limit: int, queue_depth: int, timeout_s: float) -> None:
        self.fleet = fleet
        self.limit = limit
        self.queue_depth = queue_depth
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._poll_s = min(WATCH_SECONDS, 0.005)
        self._polling = False  # one waiter of this worker polls fast (see _acquire)
        self.pacer = ShedPacer()  # this worker's shed clients, paced by its completions

    @property
    def full(self) -> bool:
        """A request arriving now would be shed: every slot and queue place is taken."""
        if self.limit <= 0:
            return False
        running, waiting = self.fleet.totals()
        return (running >= self.limit or waiting > 0) and waiting >= self.queue_depth

    def overloaded(self) -> Overloaded:
        """The error of a request that finds the queue full."""
        running, waiting = self.fleet.totals()
        retry_after = self.pacer.retry_after()
        return Overloaded(
            f"{running} requests are running (containerConcurrency {self.limit}) and "
            f"{waiting} are queued (queue depth {self.queue_depth}); retry after "
            f"{retry_after}s or raise MLFN_QUEUE_DEPTH",
            retry_after=retry_after,
            reason="queue_full",
        )

    def rest(self, seconds: float, sleep: Callable[[float], object]) -> None:
        """Rest a connection after a shed answer (see :class:`ShedPacer`)."""
        self.pacer.rest(seconds, sleep)

    @property
    def running(self) -> int:
        return self.fleet.totals()[0]

    @property
    def waiting(self) -> int:
        return self.fleet.totals()[1]

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.limit <= 0:
            yield
            return
        self._acquire()
        try:
            yield
        finally:
            with self.fleet._locked():
                self.fleet._change(-1, 0)
            with self._cond:
                self.pacer.completed()
                self._cond.notify()

    def _acquire(self) -> None:
        fleet = self.fleet
        with fleet._locked():
            running, waiting = fleet.totals()
            if running < self.limit and waiting == 0:
                fleet._change(1, 0)
                return
            if waiting >= self.queue_depth:
                raise self.overloaded()
            fleet._change(0, 1)
        deadline = time.monotonic() + self.timeout_s
        while True:
            with fleet._locked():
                if fleet.totals()[0] < self.limit:
                    fleet._change(1, -1)
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                with fleet._locked():
                    fleet._change(0, -1)
                raise Overloaded(
                    f"waited {self.timeout_s:g}s for one of {self.limit} slots "
                    "(containerConcurrency); retry later or raise "
                    "MLFN_QUEUE_TIMEOUT_SECONDS",
                    retry_after=self.pacer.retry_after(),
                    reason="queue_timeout",
                )
            with self._cond:
                # One waiter of this worker polls fast for slots freed in other workers;
                # the rest wait for a local free (notify) or re-check at WATCH_SECONDS: at
                # a full queue, hundreds of fast pollers would spend the CPU the admitted
                # requests need.
                poller = not self._polling
                if poller:
                    self._polling = True
                try:
                    self._cond.wait(min(left, self._poll_s if poller else WATCH_SECONDS))
                finally:
                    if poller:
                        self._polling = False
