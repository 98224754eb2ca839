"""The one table from an ingest outcome to the C-STORE response status (PS3.4 B.2.3), with its reason."""

from __future__ import annotations

from collections.abc import Mapping

from node.ingest import StoreOutcome, StoreResult

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC210  # pynetdicom's "failed to decode the data set"

STORE_STATUS: Mapping[StoreOutcome, tuple[int, str]] = {
    StoreOutcome.STORED: (SUCCESS, "stored"),
    StoreOutcome.STORED_AGAIN: (SUCCESS, "re-sent instance stored again"),
    StoreOutcome.CANNOT_DECODE: (CANNOT_UNDERSTAND, "undecodable"),
    StoreOutcome.MISSING_ATTRIBUTE: (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "incomplete"),
    StoreOutcome.INVALID_ATTRIBUTE: (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "invalid"),
    StoreOutcome.UID_MISMATCH: (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "not the announced instance"),
    StoreOutcome.DISK_FULL: (OUT_OF_RESOURCES, "disk full"),
    StoreOutcome.DISK_ERROR: (OUT_OF_RESOURCES, "storage error"),
    StoreOutcome.DATABASE_ERROR: (OUT_OF_RESOURCES, "database unavailable"),
}


def store_status(result: StoreResult) -> tuple[int, str]:
    """(status, Error Comment) for `result`; the comment fits the 64-character LO value."""
    status, reason = STORE_STATUS[result.outcome]
    comment = reason if result.stored else f"{reason}: {result.detail}"
    return status, comment[:64]
