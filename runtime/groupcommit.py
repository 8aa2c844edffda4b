"""Group commit: callers in flight hand their work to one committer and share its commit.

A retrain function stores one row per delivered event, and a dispatcher delivers many
events at once: a transaction (a WAL flush, a round trip) per row would cap ingest at the
disk's fsync rate and spend most of the CPU on per-statement overhead. :class:`GroupCommit`
gathers what concurrent callers submit while a commit runs, and the next caller to find
none running commits all of it in one call of ``commit(items)``. No thread of its own:
the committer is one of the callers (leader and followers), so there is nothing to start
or stop. Each caller returns only once the group holding its item is committed, so an
answer still means "stored".

``commit(items)`` returns one result per item, in order; a result that is an exception
fails that caller only (a bad row among good ones). If ``commit`` raises, every caller of
the group gets that exception; a result list of the wrong length fails the whole group.

Example:
    >>> group = GroupCommit(lambda items: [len(i) for i in items], name="demo")
    >>> group.submit(["a", "b"])  # alone: a group of one
    2
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from runtime.errors import BatchError

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    """One caller: its item, its outcome, and the lock it sleeps on until it is woken
    (its group is committed, or it is to commit the next group)."""

    __slots__ = ("done", "error", "item", "result", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit(Generic[T, R]):
    """Commit the items of concurrent callers together; thread-safe.

    Args:
        commit: stores a group; returns one result (or exception) per item, in order.
        name: what the group commits, for error messages ("rows of dataset 'digits'").
        max_items: most items in one group; callers beyond wait for the next one.

    Attributes:
        groups: commits made so far; ``items / groups`` is the mean group size.
        items: items committed so far (failed ones included).
    """

    def __init__(
        self,
        commit: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        name: str = "items",
        max_items: int = 1024,
    ) -> None:
        self._commit = commit
        self.name = name
        self.max_items = max_items
        self._lock = threading.Lock()
        self._queue: list[_Waiter[T, R]] = []
        self._committing = False
        self.groups = 0
        self.items = 0

    @property
    def queued(self) -> int:
        """Items waiting for the next group (a commit is running)."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: T) -> R:
        """Commit ``item`` with whatever else is submitted meanwhile; its result.

        Raises:
            Whatever ``commit`` raised for this item's group, or returned for this item.
        """
        mine: _Waiter[T, R] = _Waiter(item)
        with self._lock:
            self._queue.append(mine)
            lead = not self._committing
            self._committing = True
        if not lead:
            # woken once: when its group is committed, or to commit the next group; each
            # caller sleeps on a lock of its own, so a commit wakes only those it concerns
            mine.wake.acquire()
        if not mine.done:
            self._lead()
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[return-value]

    def _lead(self) -> None:
        """Commit the oldest queued items (this caller's among them), answer them, and hand
        the commit to the oldest caller still queued, if any."""
        with self._lock:
            group = self._queue[: self.max_items]
            del self._queue[: self.max_items]
        try:
            self._run(group)
        finally:
            with self._lock:
                self.groups += 1
                self.items += len(group)
                following = self._queue[0] if self._queue else None
                self._committing = following is not None
            for w in group:
                w.done = True
                if w.wake.locked():
                    w.wake.release()
            if following is not None:
                following.wake.release()  # it commits the next group

    def _run(self, group: list[_Waiter[T, R]]) -> None:
        try:
            results = self._commit([w.item for w in group])
            if len(results) != len(group):
                raise BatchError(
                    f"committing {len(group)} {self.name} gave {len(results)} results; "
                    "the commit function must return one result per item"
                )
        except BaseException as err:
            for w in group:
                w.error = err
            return
        for w, r in zip(group, results, strict=True):
            if isinstance(r, BaseException):
                w.error = r
            else:
                w.result = r
