"""GroupCommit: callers in flight share one commit, and each gets its own result or error."""

from __future__ import annotations

import threading

import pytest

from runtime.errors import BatchError
from runtime.groupcommit import GroupCommit
from tests.fixtures.grouping import held_first_commit, join, run_all

pytestmark = pytest.mark.unit


def test_callers_in_flight_share_the_next_commit() -> None:
    commits: list[list[int]] = []

    def commit(items: list[int]) -> list[int]:
        commits.append(list(items))
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(commit)
    assert group.submit(1) == 10  # alone: a group of one, no waiting
    with held_first_commit(group) as held:
        first = threading.Thread(target=group.submit, args=(2,))
        first.start()
        held.entered.wait(10)
        out, threads = run_all([lambda i=i: group.submit(i) for i in range(3, 13)])
        held.queue(10)
        held.release()
        join([first, *threads])
    assert out == [i * 10 for i in range(3, 13)]  # each caller its own result
    assert commits[:2] == [[1], [2]] and sorted(commits[2]) == list(range(3, 13))
    assert (group.groups, group.items) == (3, 12)


def test_a_failed_commit_fails_every_caller_of_its_group_only() -> None:
    calls = 0

    def commit(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("the database went away")
        return [s.upper() for s in items]

    group: GroupCommit[str, str] = GroupCommit(commit)
    with held_first_commit(group) as held:
        out, threads = run_all([lambda: group.submit("first")])
        held.entered.wait(10)
        more, more_threads = run_all([lambda s=s: group.submit(s) for s in "abcd"])
        held.queue(4)
        held.release()
        join([*threads, *more_threads])
    assert out == ["FIRST"]
    assert all(isinstance(e, ConnectionError) for e in more) and len(more) == 4
    assert group.submit("after") == "AFTER"  # the next group commits again


def test_an_item_the_commit_refuses_fails_only_its_caller() -> None:
    def commit(items: list[int]) -> list[int | BaseException]:
        return [ValueError(f"{i} is odd") if i % 2 else i for i in items]

    group: GroupCommit[int, int] = GroupCommit(commit)
    assert group.submit(2) == 2
    with pytest.raises(ValueError, match="3 is odd"):
        group.submit(3)


def test_a_result_list_of_the_wrong_length_fails_the_group() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: [], name="rows")
    with pytest.raises(BatchError, match="committing 1 rows gave 0 results"):
        group.submit(1)


def test_a_group_holds_at_most_max_items() -> None:
    sizes: list[int] = []

    def commit(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    group: GroupCommit[int, int] = GroupCommit(commit, max_items=4)
    with held_first_commit(group) as held:
        first, threads = run_all([lambda: group.submit(0)])
        held.entered.wait(10)
        more, more_threads = run_all([lambda i=i: group.submit(i) for i in range(1, 11)])
        held.queue(10)
        held.release()
        join([*threads, *more_threads])
    assert more == list(range(1, 11))
    assert first == [0] and sizes[0] == 1 and sizes[1:] == [4, 4, 2]
