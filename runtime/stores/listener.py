"""Pointer moves pushed by PostgreSQL: one ``LISTEN`` connection per process.

Publishing a version (or ``set_latest``) sends ``NOTIFY mlfn_models, '<model>'`` in its
own transaction, so the notification arrives once the new pointer is committed.
A :class:`PointerListener` keeps one autocommit connection that ``LISTEN``\\ s on that
channel, on a thread of its own, and wakes the :class:`~runtime.models.store.PointerWatch`
of each model it names: a serving replica swaps within milliseconds of the commit
instead of within ``poll_seconds``.

Polling stays the fallback: a handle still reads the pointer every ``poll_seconds``.
When the connection drops (the database restarts, a proxy cuts it), the listener logs
it, reconnects with a backoff, and wakes every watch once it listens again, because a
move may have happened while it was deaf.

Example:
    >>> listener = PointerListener(db)                    # doctest: +SKIP
    >>> watch = listener.watch("digits")                  # doctest: +SKIP
    >>> watch.wait(2.0)   # True when the pointer moved  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from runtime.errors import StoreUnavailableError
from runtime.models.store import PointerWatch
from runtime.stores.database import NOTIFY_CHANNEL, Database

__all__ = ["LISTEN_APPLICATION", "PointerListener"]

log = logging.getLogger("mlfn.stores")

LISTEN_APPLICATION = "mlfn-listen"
"""``application_name`` of the listening connection (``pg_stat_activity`` shows it)."""

_TICK = 0.5
"""Seconds between checks of the stop flag while no notification arrives."""

_MAX_BACKOFF = 10.0


class PointerListener:
    """One ``LISTEN`` connection and thread that wake the watches of the models it names.

    The thread starts with the first :meth:`watch` and ends with :meth:`stop` (within
    about half a second; the database's ``close()`` calls it).

    Args:
        db: the database whose channel to listen on.
        channel: the ``NOTIFY`` channel (payload: a model's name).
        connect: opens the listening connection (tests inject a failing one).
    """

    def __init__(
        self,
        db: Database,
        channel: str = NOTIFY_CHANNEL,
        *,
        connect: Callable[[], psycopg.Connection[Any]] | None = None,
    ) -> None:
        self.db = db
        self.channel = channel
        self._connect = connect or (lambda: db.listen(channel, LISTEN_APPLICATION))
        self._lock = threading.Lock()
        self._watches: dict[str, set[PointerWatch]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self.connects = 0
        """How many times a listening connection was opened (1 + reconnections)."""

    def __repr__(self) -> str:
        return f"PointerListener({self.db.where!r}, {self.channel!r})"

    @property
    def listening(self) -> bool:
        """True while the connection is open and ``LISTEN`` was accepted."""
        return self._listening.is_set()

    def watch(self, name: str) -> PointerWatch:
        """A watch woken on each move of ``name``'s pointer; close it when done."""
        watch = PointerWatch(name, on_close=self._forget)
        with self._lock:
            self._watches.setdefault(name, set()).add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"mlfn-listen-{self.channel}", daemon=True
                )
                self._thread.start()
        return watch

    def _forget(self, watch: PointerWatch) -> None:
        with self._lock:
            watches = self._watches.get(watch.name)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[watch.name]

    def _wake(self, name: str | None) -> None:
        with self._lock:
            if name is None:
                targets = [w for ws in self._watches.values() for w in ws]
            else:
                targets = list(self._watches.get(name, ()))
        for watch in targets:
            watch.wake()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening; the thread ends within about half a second."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("pointer listener did not stop in time", extra={"timeout_s": timeout})

    def _run(self) -> None:
        reason = "stop() was called"
        backoff = 0.5
        try:
            while not self._stop.is_set():
                try:
                    conn = self._connect()
                except (StoreUnavailableError, psycopg.Error) as err:
                    log.warning(
                        "cannot listen for pointer moves; polling only, retrying in %.1fs",
                        backoff,
                        extra={"channel": self.channel, "error": str(err)},
                    )
                    self._stop.wait(backoff)
                    backoff = min(_MAX_BACKOFF, backoff * 2)
                    continue
                self.connects += 1
                backoff = 0.5
                try:
                    self._listen(conn)
                except psycopg.Error as err:
                    if not self._stop.is_set():
                        log.warning(
                            "pointer listener lost its connection; polling until it reconnects",
                            extra={"channel": self.channel, "error": str(err).strip()},
                        )
                finally:
                    self._listening.clear()
                    conn.close()
        except BaseException as err:  # pragma: no cover - logged, then the thread ends
            reason = f"{type(err).__name__}: {err}"
            raise
        finally:
            log.info("pointer listener stopped", extra={"channel": self.channel, "reason": reason})

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        self._listening.set()
        # a move may have happened while no connection listened: every watch checks once
        self._wake(None)
        while not self._stop.is_set():
            # wait in select(), not in psycopg: under gevent (inference servers) select is
            # cooperative, while psycopg's C wait, chosen when psycopg was imported before
            # gevent patched, would hold the whole event loop for the tick
            readable, _, _ = select.select([conn.fileno()], [], [], _TICK)
            if readable:
                for note in conn.notifies(timeout=0):  # what arrived; a closed socket raises
                    self._wake(note.payload)
