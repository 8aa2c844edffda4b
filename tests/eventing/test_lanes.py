"""A partition lane: what may be committed, and how records leave it (ordered, unordered, batches)."""

from __future__ import annotations

import pytest

from eventing._kafka import Consumed
from eventing.codec import KafkaRecord
from eventing.lanes import Lane
from runtime.spec import EventBatch

pytestmark = pytest.mark.unit


def lane_with(offsets: range, capacity: int, arrived: float = 0.0) -> Lane:
    lane = Lane(("t", 0), capacity)
    for o in offsets:
        lane.pending.append((Consumed("t", 0, o, 0, KafkaRecord(b"")), arrived))
        lane.order.append(o)
    return lane


def test_commit_never_passes_an_unfinished_offset() -> None:
    lane = lane_with(range(10, 15), capacity=5)
    jobs = lane.take(None, now=0)
    assert [j[0].offset for j in jobs] == [10, 11, 12, 13, 14] and lane.inflight == 5
    lane.mark_done([12, 13])
    assert lane.next_commit is None  # 10 and 11 still in flight
    lane.mark_done([10])
    assert lane.next_commit == 11
    lane.mark_done([11])
    assert lane.next_commit == 14  # 12 and 13 were done: jump over them
    lane.mark_done([14])
    assert lane.next_commit == 15 and not lane.done and not lane.order


def test_ordered_lane_releases_one_at_a_time() -> None:
    lane = lane_with(range(3), capacity=1)
    assert [j[0].offset for j in lane.take(None, 0)] == [0]
    assert lane.take(None, 0) == []
    lane.inflight -= 1
    lane.mark_done([0])
    assert [j[0].offset for j in lane.take(None, 0)] == [1]


def test_batches_close_on_size_or_deadline() -> None:
    batch = EventBatch(max_events=4, max_wait_ms=100)
    lane = lane_with(range(6), capacity=2, arrived=10.0)
    jobs = lane.take(batch, now=10.01)
    assert [[c.offset for c in j] for j in jobs] == [[0, 1, 2, 3]]  # full; 2 left, not due
    assert lane.take(batch, now=10.05) == []
    jobs = lane.take(batch, now=10.2)
    assert [[c.offset for c in j] for j in jobs] == [[4, 5]]
