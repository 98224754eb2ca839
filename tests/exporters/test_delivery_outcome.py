"""Outcome invariants: a delivered outcome has no error, an undelivered one always says why."""

from __future__ import annotations

import pytest

from exporters.outcome import AckOutcome, SendStatus, StoreOutcome


def test_status_strings_become_the_enum_and_properties_follow() -> None:
    delivered = AckOutcome(status="delivered", ack_code="AA")
    retry = StoreOutcome(status="retry", error="timeout", sop_instance_uid="1.2")

    assert delivered.status is SendStatus.DELIVERED and delivered.delivered and not delivered.retryable
    assert retry.status is SendStatus.RETRY and retry.retryable and not retry.delivered


def test_delivered_with_an_error_is_refused() -> None:
    with pytest.raises(ValueError, match="a delivered outcome carries no error"):
        AckOutcome(status=SendStatus.DELIVERED, error="but it failed")


@pytest.mark.parametrize("status", [SendStatus.RETRY, SendStatus.FAILED])
def test_undelivered_without_a_reason_is_refused(status: SendStatus) -> None:
    with pytest.raises(ValueError, match=f"a {status.value} outcome needs an error saying why"):
        StoreOutcome(status=status, sop_instance_uid="1.2")


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="'sent' is not a valid SendStatus"):
        AckOutcome(status="sent")
