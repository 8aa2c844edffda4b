"""Per-partition lanes: which records may go out next, and which offset may be committed.

Pure bookkeeping, no I/O: the dispatcher's consumer thread fills a lane, delivery
threads finish its records in any order, and the lane says what is safe to commit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from eventing._kafka import TP, Consumed
from runtime.spec import EventBatch

__all__ = ["Lane"]


@dataclass
class Lane:
    """One partition's records between the consumer and the delivery threads.

    ``order`` holds every offset taken from Kafka and not yet finished, in offset order;
    ``next_commit`` is the offset to commit: one past the longest finished prefix.
    Not thread-safe: the dispatcher guards lanes with its lock.
    """

    tp: TP
    capacity: int
    pending: deque[tuple[Consumed, float]] = field(default_factory=deque)
    order: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    inflight: int = 0
    next_commit: int | None = None
    committed: int | None = None
    paused: bool = False

    def mark_done(self, offsets: list[int]) -> None:
        self.done.update(offsets)
        while self.order and self.order[0] in self.done:
            off = self.order.popleft()
            self.done.discard(off)
            self.next_commit = off + 1

    def take(self, batch: EventBatch | None, now: float) -> list[list[Consumed]]:
        jobs: list[list[Consumed]] = []
        while self.pending and self.inflight < self.capacity:
            if batch is None:
                jobs.append([self.pending.popleft()[0]])
            else:
                full = len(self.pending) >= batch.max_events
                due = now - self.pending[0][1] >= batch.max_wait_ms / 1000
                if not (full or due):
                    break
                n = min(batch.max_events, len(self.pending))
                jobs.append([self.pending.popleft()[0] for _ in range(n)])
            self.inflight += 1
        return jobs
