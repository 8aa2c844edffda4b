"""The rows of one batch request, stored together: one transaction for a batch of events.

A batch delivery (``application/cloudevents-batch+json``) calls the function once per
event; a retrain function stores one row per call. Inside :func:`rows_together` (the
server opens it around a batch) :meth:`RetrainLoop.add` only collects its rows, and
:meth:`Together.flush` stores each loop's rows in one append (one transaction) before the
server answers, so the 2xx still means every row of the batch is stored.

Example:
    >>> with rows_together() as together:  # doctest: +SKIP
    ...     for ev in batch:
    ...         retrain(ev, ctx)  # loop.add(...) collects
    ...     together.flush()  # stored; a failure here fails the request (it is retried)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.datasets import Row
    from runtime.retraining.loop import RetrainLoop

__all__ = ["Together", "current", "rows_together"]


class Together:
    """Rows collected per loop, in the order they were added."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[RetrainLoop, list[Row]]] = {}

    def defer(self, loop: RetrainLoop, rows: Sequence[Row]) -> None:
        self._pending.setdefault(id(loop), (loop, []))[1].extend(rows)

    def flush(self) -> int:
        """Store what was collected (one append per loop); how many rows were new.

        Raises:
            Whatever the store raises (the rows not yet stored stay collected).
        """
        added = 0
        while self._pending:
            key = next(iter(self._pending))
            loop, rows = self._pending[key]
            added += loop.add(rows, now=True)
            del self._pending[key]
        return added


_CURRENT: ContextVar[Together | None] = ContextVar("mlfn_rows_together", default=None)


def current() -> Together | None:
    """The collection of the batch being handled in this context, if any."""
    return _CURRENT.get()


@contextmanager
def rows_together() -> Iterator[Together]:
    """Collect the rows :meth:`RetrainLoop.add` gets in this context until ``flush()``.

    Rows not flushed when the block ends are dropped: the request failed, and its
    delivery is retried.
    """
    together = Together()
    token = _CURRENT.set(together)
    try:
        yield together
    finally:
        _CURRENT.reset(token)
