"""The one table from an ingest outcome to the C-STORE response status (PS3.4 B.2.3), with its reason."""

from __future__ import annotations

from collections.abc import Mapping

from node.dicom.ingest import IngestOutcome, IngestResult

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC210  # pynetdicom's "failed to decode the data set"

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
