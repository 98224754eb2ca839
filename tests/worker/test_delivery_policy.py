"""The outbox's rules: exponential backoff with a cap and jitter, and when a delivery stops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exporters.outcome import SendStatus
from node.delivery.policy import BACKOFF_CAP_SECONDS, Decision, backoff_seconds, decide
from node.store.states import DeliveryStatus

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempts", "seconds"), [(1, 5.0), (2, 10.0), (3, 20.0), (8, 640.0), (9, 900.0), (500, 900.0)]
)
def test_the_wait_doubles_up_to_the_cap(attempts: int, seconds: float) -> None:
    assert backoff_seconds(attempts, 5.0) == seconds
    assert BACKOFF_CAP_SECONDS == 900.0


def test_jitter_scales_the_wait_between_half_and_all_of_it() -> None:
    assert backoff_seconds(3, 5.0, jitter=0.0) == 10.0
    assert backoff_seconds(3, 5.0, jitter=0.5) == 15.0
    assert backoff_seconds(3, 5.0, cap=12.0, jitter=1.0) == 12.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, 5.0), "attempts must be >= 1, got 0"),
        ((1, -1.0), "base and cap must be >= 0, got base=-1.0, cap=900.0"),
        ((1, 5.0, 900.0, 1.5), r"jitter must be within \[0, 1\], got 1.5"),
    ],
)
def test_impossible_arguments_are_refused(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backoff_seconds(*arguments)


def _decide(sent: SendStatus, error: str | None, attempts: int) -> Decision:
    return decide(sent, error, attempts=attempts, max_attempts=3, now=NOW, base_seconds=5.0, jitter=1.0)


def test_delivered_is_final() -> None:
    assert _decide(SendStatus.DELIVERED, None, 1) == Decision(DeliveryStatus.DELIVERED, None, None)


def test_a_refusal_is_final_on_the_first_attempt() -> None:
    assert _decide(SendStatus.FAILED, "AR: no", 1) == Decision(DeliveryStatus.FAILED, None, "AR: no")


def test_a_transient_failure_is_retried_until_the_limit() -> None:
    assert _decide(SendStatus.RETRY, "down", 2) == Decision(
        DeliveryStatus.RETRYING, NOW + timedelta(seconds=10), "down"
    )
    assert _decide(SendStatus.RETRY, "down", 3) == Decision(
        DeliveryStatus.FAILED, None, "gave up after 3 attempts: down"
    )


def _over(attempts: int, age: timedelta, max_attempts: int = 0) -> Decision:
    return decide(
        SendStatus.RETRY,
        "down",
        attempts=attempts,
        max_attempts=max_attempts,
        now=NOW,
        first_queued_at=NOW - age,
        horizon=timedelta(hours=24),
        base_seconds=5.0,
        jitter=1.0,
    )


def test_without_an_attempt_cap_only_the_horizon_gives_up() -> None:
    assert _over(200, timedelta(hours=23, minutes=59)).status is DeliveryStatus.RETRYING
    assert _over(200, timedelta(hours=24)) == Decision(
        DeliveryStatus.FAILED, None, "gave up after 24 h and 200 attempts: down"
    )


def test_a_site_cap_on_attempts_still_applies_within_the_horizon() -> None:
    assert _over(5, timedelta(minutes=1), max_attempts=5).error == "gave up after 5 attempts: down"
