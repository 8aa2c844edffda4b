"""The activator queue of a revision, in one event loop with no processes."""

from __future__ import annotations

import asyncio

import pytest

from localplatform.autoscaler import Policy
from localplatform.revisions import START_FAILURES_BEFORE_ERROR, Instance, Revision, StartFailure
from localplatform.settings import PlatformSettings
from runtime.spec import FunctionSpec, Scaling

pytestmark = pytest.mark.unit

SPEC = FunctionSpec(name="f", kind="http", module="m", entrypoint="f")


def revision(cc: int = 0) -> tuple[Revision, list[int]]:
    pokes: list[int] = []
    rev = Revision(
        "f-00001",
        SPEC,
        "h",
        Policy.from_scaling(Scaling(container_concurrency=cc), PlatformSettings()),
        1,
        0.0,
        lambda r: pokes.append(1),
    )
    return rev, pokes


def instance(rev: Revision, n: int) -> Instance:
    inst = Instance(f"f-00001-{n}", rev, 40000 + n, 0.0)
    rev.instances[inst.id] = inst
    return inst


def test_held_requests_wait_for_a_ready_instance_and_poke_once_each() -> None:
    async def scenario() -> None:
        rev, pokes = revision()
        waiters = [asyncio.ensure_future(rev.wait_instance()) for _ in range(3)]
        await asyncio.sleep(0)
        assert rev.waiting == 3 and len(pokes) == 3 and not any(w.done() for w in waiters)
        inst = instance(rev, 1)
        rev.mark_ready(inst)
        got = await asyncio.gather(*waiters)
        assert got == [inst, inst, inst] and inst.in_flight == 3

    asyncio.run(scenario())


def test_container_concurrency_holds_the_excess_until_a_slot_frees() -> None:
    async def scenario() -> None:
        rev, _ = revision(cc=1)
        inst = instance(rev, 1)
        rev.mark_ready(inst)
        first = rev.acquire()
        assert first is inst and rev.acquire() is None
        second = asyncio.ensure_future(rev.wait_instance())
        await asyncio.sleep(0)
        assert not second.done()
        rev.release(inst)
        assert await second is inst

    asyncio.run(scenario())


def test_least_loaded_instance_is_chosen() -> None:
    rev, _ = revision()
    a, b = instance(rev, 1), instance(rev, 2)
    rev.mark_ready(a)
    rev.mark_ready(b)
    assert rev.acquire() is a
    assert rev.acquire() is b
    assert rev.acquire() is a


def test_repeated_start_failures_fail_held_requests_with_the_reason() -> None:
    async def scenario() -> None:
        rev, _ = revision()
        waiter = asyncio.ensure_future(rev.wait_instance())
        await asyncio.sleep(0)
        rev.start_failures = START_FAILURES_BEFORE_ERROR
        rev.last_failure = "exit code 1"
        rev.fail_waiters()
        with pytest.raises(StartFailure, match=r"failed to start 3 times.*exit code 1"):
            await waiter
        with pytest.raises(StartFailure):
            await rev.wait_instance()

    asyncio.run(scenario())


def test_terminating_instance_is_stopped_when_its_last_request_ends() -> None:
    rev, _ = revision()
    inst = instance(rev, 1)
    rev.mark_ready(inst)
    assert rev.acquire() is inst
    rev.stop_routing(inst)
    assert rev.acquire() is None
    assert rev.release(inst) is inst
