"""The one table from an ingest outcome to the C-STORE response status (PS3.4 B.2.3), with its reason."""

from __future__ import annotations

from collections.abc import Mapping

from node.dicom.incoming import Refusal
from node.dicom.outcome import IngestOutcome, IngestResult

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC210  # pynetdicom's "failed to decode the data set"
# "Cannot understand", not "out of resources": the same instance sent again would be refused again.
INSTANCE_TOO_LARGE = 0xC000

STORE_STATUS: Mapping[IngestOutcome, tuple[int, str]] = {
    IngestOutcome.STORED: (SUCCESS, "stored"),
    IngestOutcome.STORED_AGAIN: (SUCCESS, "re-sent instance stored again"),
    IngestOutcome.CANNOT_DECODE: (CANNOT_UNDERSTAND, "undecodable"),
    IngestOutcome.MISSING_ATTRIBUTE: (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "incomplete"),
    IngestOutcome.INVALID_ATTRIBUTE: (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "invalid"),
    IngestOutcome.UID_MISMATCH: (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "not the announced instance"),
    IngestOutcome.DISK_FULL: (OUT_OF_RESOURCES, "disk full"),
    IngestOutcome.DISK_ERROR: (OUT_OF_RESOURCES, "storage error"),
    IngestOutcome.DATABASE_ERROR: (OUT_OF_RESOURCES, "database unavailable"),
}


def store_status(result: IngestResult) -> tuple[int, str]:
    """(status, Error Comment) for `result`; the comment fits the 64-character LO value."""
    status, reason = STORE_STATUS[result.outcome]
    comment = reason if result.stored else f"{reason}: {result.detail}"
    return status, comment[:64]


def refusal_status(refusal: Refusal, max_instance_mb: int, min_free_mb: int) -> tuple[int, str]:
    """(status, Error Comment) for a data set the SCP did not keep while it arrived (`node.dicom.incoming`)."""
    if refusal is Refusal.TOO_LARGE:
        return (
            INSTANCE_TOO_LARGE,
            f"larger than the node's {max_instance_mb} MB limit (ECHO_MAX_INSTANCE_MB)"[:64],
        )
    return OUT_OF_RESOURCES, f"disk almost full: less than {min_free_mb} MB free (ECHO_MIN_FREE_MB)"[:64]
