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
when a worker dies holding it. Under gevent a worker never blocks in ``lockf``: it tries
without waiting, again for a few microseconds while another worker holds the lock, and
then lets its other greenlets run (:meth:`Fleet._lock`). A blocking ``lockf`` froze the
whole event loop for as long as the holder was off the CPU: on a busy machine the
holder is preempted with the lock held (lock-holder preemption), and every request and
accept of the waiting worker stood still for a scheduler time slice. Each worker owns a
row (its pid and its own counts); when gunicorn reaps a worker, the master subtracts
that row from the totals, so a worker killed mid-request (timeout, OOM) leaks no slot.

A single-worker server does not use any of this (the lean path).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol

from runtime.server.errors import Overloaded
from runtime.server.limits import ShedPacer, cooperative_sleep

__all__ = ["POLL_SECONDS", "WATCH_SECONDS", "Fleet", "SharedLimiter"]

WATCH_SECONDS = 0.1
"""How often a worker checks for model swaps announced by another worker."""

POLL_SECONDS = 0.005
"""How often a worker with queued requests looks for slots freed in another worker."""

LOCK_SPINS = 3
"""Turns of the event loop a gevent worker yields (``sleep(0)``) while another worker holds
the table's lock, before it waits :data:`LOCK_BACKOFF_S` between tries."""

LOCK_SPIN_S = 0.000005
"""How long a gevent worker that finds the lock held tries again at once, before it lets
its other greenlets run (a turn of the event loop: milliseconds when the server is full):
the critical section takes a few microseconds, so a holder on the other CPU has let go
by then; one that was preempted holding it has not, and is not waited for."""

LOCK_BACKOFF_S = 0.0002
"""The wait between tries for a lock still held after :data:`LOCK_SPINS` turns."""

_BUSY = (errno.EACCES, errno.EAGAIN)

_HEAD = struct.Struct("qqqqq")  # running, waiting, generation, expected workers, queuing
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
        self._mem[: _HEAD.size] = _HEAD.pack(0, 0, 0, workers, 0)
        self._row: int | None = None
        # the lock between processes is lockf; this one keeps a worker's threads (greenlets)
        # in turn (record locks are per process, so two threads of one worker would both
        # get it). Made again in join(): after the fork, and after gevent patched threading.
        self._local: _Wake = threading.Lock()
        self._yield: Callable[[float], object] | None = None  # set in join() under gevent

    # --- the lock --------------------------------------------------------------------

    def _lock(self) -> None:
        """Take the table's lock (release it with :meth:`_unlock`).

        With threads, ``lockf`` blocks only the calling thread. Under gevent it would block
        the worker's only thread, so the lock is tried without waiting (again and again
        for :data:`LOCK_SPIN_S`) and, while another worker still holds it, the other
        greenlets run between tries (see the module).
        """
        self._local.acquire()
        pause = self._yield
        if pause is None:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._local.release()
                raise
            return
        tries = 0
        try:
            while not self._try_lock():
                if tries == 0:  # held now: a holder on another CPU lets go within microseconds
                    spin_until = time.perf_counter() + LOCK_SPIN_S
                    while time.perf_counter() < spin_until:
                        if self._try_lock():
                            return
                tries += 1
                pause(0 if tries <= LOCK_SPINS else LOCK_BACKOFF_S)
        except BaseException:
            self._local.release()
            raise

    def _try_lock(self) -> bool:
        """Take the table's lock if no other worker holds it (without waiting)."""
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in _BUSY:
                raise
            return False
        return True

    def _unlock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN)
        self._local.release()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock()
        try:
            yield
        finally:
            self._unlock()

    def _head(self) -> tuple[int, int, int, int, int]:
        """Running and waiting totals, swap generation, expected workers, and how many
        workers have requests waiting."""
        running, waiting, generation, expected, queuing = _HEAD.unpack_from(self._mem, 0)
        return running, waiting, generation, expected, queuing

    def _set_head(self, running: int, waiting: int, generation: int, queuing: int) -> None:
        _HEAD.pack_into(self._mem, 0, running, waiting, generation, self.workers, queuing)

    def _row_at(self, i: int) -> tuple[int, int, int, int]:
        pid, running, waiting, ready = _ROW.unpack_from(self._mem, _HEAD.size + i * _ROW.size)
        return pid, running, waiting, ready

    def _set_row(self, i: int, pid: int, running: int, waiting: int, ready: int) -> None:
        _ROW.pack_into(self._mem, _HEAD.size + i * _ROW.size, pid, running, waiting, ready)

    # --- membership (worker: join; master: leave) ------------------------------------

    def join(self) -> None:
        """Claim a row for this process (a worker, after the fork)."""
        pid = os.getpid()
        self._yield = cooperative_sleep()
        self._local = _cooperative_lock() if self._yield is not None else threading.Lock()
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
                    r, w, g, _, q = self._head()
                    q -= 1 if waiting > 0 else 0
                    self._set_head(max(0, r - running), max(0, w - waiting), g, max(0, q))
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
            r, w, g, _, q = self._head()
            self._set_head(r, w, g + 1, q)

    # --- slots -----------------------------------------------------------------------

    def _mine(self) -> int:
        if self._row is None:
            raise RuntimeError("this process has not joined the fleet; call Fleet.join() first")
        return self._row

    def totals(self) -> tuple[int, int]:
        """Requests running and waiting, over all workers."""
        r, w, _, _, _ = self._head()
        return r, w

    def queuing(self) -> int:
        """Workers with requests waiting for a slot."""
        return self._head()[4]

    def own_counts(self) -> tuple[int, int]:
        """Requests running and waiting in this worker."""
        _, running, waiting, _ = self._row_at(self._mine())
        return running, waiting

    def _change(self, d_running: int, d_waiting: int) -> None:
        """Under the lock: move this worker's counts and the totals together."""
        i = self._mine()
        r, w, g, _, q = self._head()
        pid, running, waiting, ready = self._row_at(i)
        if d_waiting and (waiting == 0) != (waiting + d_waiting == 0):
            q += 1 if waiting == 0 else -1
        self._set_head(r + d_running, w + d_waiting, g, q)
        self._set_row(i, pid, running + d_running, waiting + d_waiting, ready)

    def limiter(self, limit: int, queue_depth: int, timeout_s: float) -> SharedLimiter:
        return SharedLimiter(self, limit, queue_depth, timeout_s)


class _Waiter:
    """A queued request of this worker, asleep on ``wake`` until it is given a slot or its
    ``deadline`` (monotonic seconds) passes; the poller expires it then (no timer each)."""

    __slots__ = ("deadline", "granted", "wake")

    def __init__(self, wake: _Wake, deadline: float) -> None:
        self.wake = wake
        self.deadline = deadline
        self.granted = False


class _Wake(Protocol):
    """What a waiter sleeps on: ``acquire`` blocks until another calls ``release``."""

    def acquire(self) -> object: ...

    def release(self) -> object: ...


def _cooperative_lock() -> _Wake:
    """gevent's C semaphore as a lock (the patched ``threading.Lock`` wraps one in Python)."""
    from gevent.lock import Semaphore

    lock: _Wake = Semaphore(1)
    return lock


def _wake_factory() -> Callable[[], _Wake]:
    """A lock taken once, released to wake: under gevent its C semaphore (the patched
    ``threading.Lock`` wraps one in Python code), else a thread lock."""
    if cooperative_sleep() is not None:
        from gevent.lock import Semaphore

        return lambda: Semaphore(0)

    def locked() -> _Wake:
        lock = threading.Lock()
        lock.acquire()
        return lock

    return locked


class SharedLimiter:
    """:class:`~runtime.server.limits.ConcurrencyLimiter`'s contract over all workers.

    At most ``limit`` requests run at once in the whole server, and at most
    ``queue_depth`` wait; a request finding the queue full or waiting past ``timeout_s``
    gets :class:`Overloaded`. ``limit=0`` means unlimited.

    How a queued request gets its slot, without waking anyone who will not get one:

    - each worker queues its own waiters (first in, first out), each asleep on a lock of
      its own until it is handed a slot or its ``timeout_s`` is up (the poller wakes it
      then: no timer per waiter);
    - a request that ends here hands its slot straight to this worker's oldest waiter
      (one lock of the table; the running total does not move), unless this worker holds
      more than its share of the slots (see :meth:`_keeps_slot`): then it frees the slot;
    - one poller per worker with waiters (a thread, a greenlet under gevent) looks at the
      totals every :data:`POLL_SECONDS` without the lock, and takes the lock only when a
      slot is free (freed in another worker, or by a worker the master reaped) or its
      oldest waiter's ``timeout_s`` is up.

    A slot is not kept by the worker whose requests happen to end first: while several
    workers have waiters, each keeps handing its slots to its own waiters only while it
    runs no more than an equal share of the limit (plus a margin that stops slots going
    back and forth), so no worker's queue starves while another's drains, and each
    worker (one per CPU) gets as much work as the others, however the connections fell.
    """

    def __init__(self, fleet: Fleet, limit: int, queue_depth: int, timeout_s: float) -> None:
        self.fleet = fleet
        self.limit = limit
        self.queue_depth = queue_depth
        self.timeout_s = timeout_s
        self.margin = max(1, limit // 20)
        self._waiters: deque[_Waiter] = deque()
        self._poller: threading.Thread | None = None
        self._new_wake = _wake_factory()
        self.pacer = ShedPacer()  # this worker's shed clients, paced by its completions
        self._slot = _Slot(self)

    @property
    def full(self) -> bool:
        """A request arriving now would be shed: every slot and queue place is taken."""
        if self.limit <= 0:
            return False
        running, waiting = self.fleet.totals()
        return (running >= self.limit or waiting > 0) and waiting >= self.queue_depth

    @property
    def saturated(self) -> bool:
        """Every slot is taken: a request arriving now waits in the queue or is shed."""
        return 0 < self.limit <= self.fleet.totals()[0]

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

    def slot(self) -> AbstractContextManager[None]:
        """Hold one slot for the block (or raise :class:`Overloaded`)."""
        return _UNLIMITED if self.limit <= 0 else self._slot

    def _acquire(self) -> None:
        if self.full:  # a look without the lock: shedding takes no lock at all
            raise self.overloaded()
        fleet = self.fleet
        waiter: _Waiter | None = None
        poller = None
        fleet._lock()
        try:
            running, waiting = fleet.totals()
            if running < self.limit and waiting == 0:
                fleet._change(1, 0)
                return
            if waiting < self.queue_depth:
                fleet._change(0, 1)
                waiter = _Waiter(self._new_wake(), time.monotonic() + self.timeout_s)
                self._waiters.append(waiter)
                if self._poller is None:
                    poller = threading.Thread(
                        target=self._poll, name="mlfn-slot-poller", daemon=True
                    )
                    self._poller = poller
        finally:
            fleet._unlock()
        if waiter is None:
            raise self.overloaded()  # its message is written outside the lock
        if poller is not None:  # started outside the lock: under gevent, start() yields
            poller.start()
        try:
            waiter.wake.acquire()  # until a slot is handed over or the poller expires it
        except BaseException:  # the waiting greenlet or thread was killed: leave no count
            with fleet._locked():
                if not waiter.granted and waiter in self._waiters:
                    self._waiters.remove(waiter)
                    fleet._change(0, -1)
            if waiter.granted:
                self._release()
            raise
        if waiter.granted:
            return
        raise Overloaded(
            f"waited {self.timeout_s:g}s for one of {self.limit} slots "
            "(containerConcurrency); retry later or raise MLFN_QUEUE_TIMEOUT_SECONDS",
            retry_after=self.pacer.retry_after(),
            reason="queue_timeout",
        )

    def _release(self) -> None:
        fleet = self.fleet
        waiter = None
        fleet._lock()
        try:
            self.pacer.completed()
            if self._waiters and self._keeps_slot(-1):
                waiter = self._waiters.popleft()
                waiter.granted = True
                fleet._change(0, -1)  # the slot passes on: the running total stays
            else:
                fleet._change(-1, 0)
        finally:
            fleet._unlock()
        if waiter is not None:
            waiter.wake.release()

    def _keeps_slot(self, ending: int) -> bool:
        """Under the lock: whether a slot may go to a waiter of this worker (it has some).

        Yes when no other worker has waiters; else when this worker runs fewer than an
        equal share of the limit (``limit / workers with waiters``). A request that ends
        (``ending=-1``) hands its slot on while this worker runs fewer than its share
        plus :attr:`margin`; the poller (``ending=0``) takes a free slot only below the
        share. When a slot is free, some worker with waiters is below its share (the
        shares add up to the limit), so a freed slot always finds a taker.
        """
        queuing = self.fleet.queuing()
        if queuing <= 1:  # every waiter is here
            return True
        mine_running, _ = self.fleet.own_counts()
        margin = self.margin if ending else 0
        return (mine_running + ending - margin) * queuing < self.limit

    def _poll(self) -> None:
        """While this worker has waiters: give them slots that are free, and wake those
        whose wait ran out (``timeout_s``, to within :data:`POLL_SECONDS`; see the class)."""
        fleet = self.fleet
        waiters = self._waiters
        while True:
            time.sleep(POLL_SECONDS)  # gevent.sleep under the gevent worker
            now = time.monotonic()
            if waiters and waiters[0].deadline > now and fleet.totals()[0] >= self.limit:
                continue  # nothing free, nobody due: no lock taken
            woken = []
            with fleet._locked():
                if not waiters:
                    self._poller = None
                    return
                while waiters and waiters[0].deadline <= now:  # first in, first due
                    woken.append(waiters.popleft())  # granted stays False: it timed out
                    fleet._change(0, -1)
                while waiters and fleet.totals()[0] < self.limit and self._keeps_slot(0):
                    waiter = waiters.popleft()
                    waiter.granted = True
                    fleet._change(1, -1)
                    woken.append(waiter)
            for waiter in woken:
                waiter.wake.release()


class _Slot(AbstractContextManager[None]):
    """:meth:`SharedLimiter.slot`: a plain object, cheaper per request than a generator."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: SharedLimiter) -> None:
        self._limiter = limiter

    def __enter__(self) -> None:
        self._limiter._acquire()

    def __exit__(self, *exc: object) -> None:
        self._limiter._release()


_UNLIMITED = nullcontext()
