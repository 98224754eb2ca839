"""What a send attempt achieved, as plain values the outbox can persist and act on.

Three statuses and nothing else: the outbox delivers once on DELIVERED, backs off and resends on
RETRY, and stops on FAILED. Success is only ever set from the peer's own answer (C-STORE status
0x0000 or a warning, MSA-1 AA/CA echoing our control id), never from the absence of an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SendStatus(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # transient: the peer or the network may accept a resend later
    FAILED = "failed"  # permanent: resending the same bytes will be refused again


@dataclass(frozen=True, kw_only=True)
class DeliveryOutcome:
    """Fields every sender reports; `error` says why a send did not deliver (None when it did)."""

    status: SendStatus
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", SendStatus(self.status))
        if self.status is SendStatus.DELIVERED and self.error is not None:
            raise ValueError(f"a delivered outcome carries no error, got error={self.error!r}")
        if self.status is not SendStatus.DELIVERED and not self.error:
            raise ValueError(f"a {self.status.value} outcome needs an error saying why")

    @property
    def delivered(self) -> bool:
        return self.status is SendStatus.DELIVERED

    @property
    def retryable(self) -> bool:
        return self.status is SendStatus.RETRY


@dataclass(frozen=True, kw_only=True)
class StoreOutcome(DeliveryOutcome):
    """One dataset's C-STORE result; `warning` is set when the PACS stored it with a warning status."""

    sop_instance_uid: str
    status_code: int | None = None  # the DIMSE status the PACS answered; None when none came back
    warning: str | None = None


@dataclass(frozen=True, kw_only=True)
class AckOutcome(DeliveryOutcome):
    """One ORU's MLLP result: MSA-1 as `ack_code`, MSA-3/ERR text as `ack_text`, the ACK as read."""

    ack_code: str | None = None
    ack_text: str | None = None
    raw_ack: str | None = None
