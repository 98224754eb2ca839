"""What ingesting one instance can come to: the SCP maps each outcome to its DIMSE status."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.dicom.association_log import LiveAssociation


class IngestOutcome(StrEnum):
    STORED = "stored"
    STORED_AGAIN = "stored-again"  # a re-sent instance: same row, file replaced
    CANNOT_DECODE = "cannot-decode"
    MISSING_ATTRIBUTE = "missing-attribute"
    INVALID_ATTRIBUTE = "invalid-attribute"
    UID_MISMATCH = "uid-mismatch"  # the data set is not the instance the request announced
    DISK_FULL = "disk-full"
    DISK_ERROR = "disk-error"
    DATABASE_ERROR = "database-error"


@dataclass(frozen=True)
class ReceivedInstance:
    """What the SCP hands over: the request's identifiers and the instance exactly as it was sent."""

    sop_class_uid: str  # the C-STORE request's Affected SOP Class UID
    sop_instance_uid: str  # the C-STORE request's Affected SOP Instance UID
    transfer_syntax_uid: str  # of the presentation context: the file keeps it
    encoded: bytes  # DICOM Part 10: preamble, file meta, then the data set bytes as received
    association_id: int | None = None  # an association whose row is written already
    # The SCP's association: its row is written with its first instance (then its id is set).
    association: LiveAssociation | None = None


@dataclass(frozen=True)
class IngestResult:
    outcome: IngestOutcome
    detail: str  # one line for logs and the DIMSE Error Comment; never patient data
    study_id: int | None = None

    @property
    def stored(self) -> bool:
        return self.outcome in (IngestOutcome.STORED, IngestOutcome.STORED_AGAIN)
