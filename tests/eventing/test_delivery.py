"""The retry loop: Knative's retryable codes, backoff policies, carried failure counts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventing.delivery import Response, deliver, is_retryable
from runtime.spec import Delivery

pytestmark = pytest.mark.unit


def run(
    statuses: list[int | None], delivery: Delivery, before: int = 0
) -> tuple[object, list[float], list[int]]:
    answers = iter(statuses)
    waits: list[float] = []
    recorded: list[int] = []

    def send() -> Response:
        s = next(answers)
        return Response(s, error=None if s else "refused")

    out = deliver(
        send,
        delivery,
        failures_before=before,
        record_failure=recorded.append,
        wait=lambda s: waits.append(s) is None,
    )
    return out, waits, recorded


def test_success_first_time() -> None:
    out, waits, _ = run([200], Delivery(retry=3))
    assert out is not None and out.delivered and out.failures == 0 and waits == []  # type: ignore[attr-defined]


def test_exponential_backoff_then_success() -> None:
    d = Delivery(retry=3, backoff_policy="exponential", backoff_delay=timedelta(seconds=0.1))
    out, waits, recorded = run([503, None, 200], d)
    assert out.delivered  # type: ignore[attr-defined]
    assert waits == pytest.approx([0.1, 0.2])
    assert recorded == [1, 2]


def test_linear_backoff_and_exhaustion() -> None:
    d = Delivery(retry=2, backoff_policy="linear", backoff_delay=timedelta(seconds=0.1))
    out, waits, _ = run([500, 500, 500], d)
    assert not out.delivered and out.failures == 3 and out.response.status == 500  # type: ignore[attr-defined]
    assert waits == pytest.approx([0.1, 0.2])


def test_non_retryable_status_fails_at_once() -> None:
    out, waits, _ = run([400], Delivery(retry=5))
    assert not out.delivered and waits == []  # type: ignore[attr-defined]


def test_failures_carried_from_before_a_restart_count() -> None:
    out, _, recorded = run([500, 500], Delivery(retry=3), before=2)
    assert not out.delivered and out.failures == 4 and recorded == [3]  # type: ignore[attr-defined]
    out, _, _ = run([], Delivery(retry=3), before=4)
    assert not out.delivered  # type: ignore[attr-defined]


def test_stop_during_backoff_abandons() -> None:
    out = deliver(lambda: Response(500), Delivery(retry=3), wait=lambda s: False)
    assert out is None


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (None, True),
        (404, True),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (401, False),
        (413, False),
    ],
)
def test_retryable_codes(status: int | None, retry: bool) -> None:
    assert is_retryable(Response(status)) is retry
