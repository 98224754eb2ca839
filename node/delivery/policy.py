"""The outbox's rules, as pure functions: when to try again, and when to stop.

The senders classify each attempt (`exporters.store_status` for C-STORE statuses, `exporters.ack`
for MSA-1) as delivered, retry or failed; this module only acts on that class:

- DELIVERED: done.
- FAILED (a permanent refusal: sending the same bytes again would be refused again): failed at once.
- RETRY (no connection, timeout, busy, out of resources, MSA-1 AE/CE, a malformed ACK): tried again
  after ``min(cap, base * 2**(attempts-1))`` seconds, scaled by a jitter in [0.5, 1] so that deliveries
  that failed together do not all come back in the same second. Given up (failed) only once the row
  is older than the horizon (default 24 h: a PACS down overnight loses nothing), or after
  `max_attempts` when a site sets that cap (0: none).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from exporters.outcome import SendStatus
from node.store.states import DeliveryStatus

BACKOFF_CAP_SECONDS = 900.0  # a PACS down overnight is tried every 15 minutes at most
JITTER_FLOOR = 0.5


def backoff_seconds(
    attempts: int, base: float, cap: float = BACKOFF_CAP_SECONDS, jitter: float = 1.0
) -> float:
    """The wait after the `attempts`-th failed attempt; `jitter` in [0, 1] comes from the caller's RNG."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    if base < 0 or cap < 0:
        raise ValueError(f"base and cap must be >= 0, got base={base}, cap={cap}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be within [0, 1], got {jitter}")
    exponential = min(cap, base * 2.0 ** min(attempts - 1, 60))
    return exponential * (JITTER_FLOOR + (1.0 - JITTER_FLOOR) * jitter)


@dataclass(frozen=True)
class Decision:
    status: DeliveryStatus
    next_attempt_at: datetime | None  # None once delivered or failed
    error: str | None


def decide(
    sent: SendStatus,
    error: str | None,
    *,
    attempts: int,
    max_attempts: int,
    now: datetime,
    first_queued_at: datetime | None = None,
    horizon: timedelta | None = None,
    base_seconds: float,
    jitter: float,
    cap_seconds: float = BACKOFF_CAP_SECONDS,
) -> Decision:
    """What becomes of a delivery after its `attempts`-th attempt ended with `sent`."""
    if sent is SendStatus.DELIVERED:
        return Decision(DeliveryStatus.DELIVERED, None, None)
    if sent is SendStatus.FAILED:
        return Decision(DeliveryStatus.FAILED, None, error or "refused")
    if max_attempts and attempts >= max_attempts:
        return Decision(
            DeliveryStatus.FAILED, None, f"gave up after {attempts} attempts: {error or 'no reason'}"
        )
    if horizon is not None and first_queued_at is not None and now - first_queued_at >= horizon:
        hours = horizon.total_seconds() / 3600
        return Decision(
            DeliveryStatus.FAILED,
            None,
            f"gave up after {hours:g} h and {attempts} attempts: {error or 'no reason'}",
        )
    wait = backoff_seconds(attempts, base_seconds, cap_seconds, jitter)
    return Decision(DeliveryStatus.RETRYING, now + timedelta(seconds=wait), error or "no reason")
