"""The outcome -> C-STORE status table, and the calling/called AE policy."""

from __future__ import annotations

import pytest

from node.config.settings import parse_callers
from node.dicom.access import AccessPolicy, Refusal
from node.dicom.dimse_status import STORE_STATUS, refusal_status, store_status
from node.dicom.incoming import Refusal as IncomingRefusal
from node.dicom.outcome import IngestOutcome, IngestResult


def test_every_outcome_has_exactly_one_status() -> None:
    assert set(STORE_STATUS) == set(IngestOutcome)
    assert {outcome: status for outcome, (status, _) in STORE_STATUS.items()} == {
        IngestOutcome.STORED: 0x0000,
        IngestOutcome.STORED_AGAIN: 0x0000,
        IngestOutcome.CANNOT_DECODE: 0xC210,
        IngestOutcome.MISSING_ATTRIBUTE: 0xA900,
        IngestOutcome.INVALID_ATTRIBUTE: 0xA900,
        IngestOutcome.UID_MISMATCH: 0xA900,
        IngestOutcome.DISK_FULL: 0xA700,
        IngestOutcome.DISK_ERROR: 0xA700,
        IngestOutcome.DATABASE_ERROR: 0xA700,
    }


def test_a_failure_comment_gives_the_reason_and_fits_an_lo_value() -> None:
    status, comment = store_status(
        IngestResult(IngestOutcome.MISSING_ATTRIBUTE, "StudyInstanceUID is missing")
    )
    assert (status, comment) == (0xA900, "incomplete: StudyInstanceUID is missing")
    _, long_comment = store_status(IngestResult(IngestOutcome.DISK_ERROR, "x" * 200))
    assert len(long_comment) == 64


def test_a_data_set_refused_while_it_arrived_says_which_limit_and_setting() -> None:
    assert refusal_status(IncomingRefusal.TOO_LARGE, 256, 1024) == (
        0xC000,  # "cannot understand": a permanent failure, the sender should not retry it as is
        "larger than the node's 256 MB limit (ECHO_MAX_INSTANCE_MB)",
    )
    assert refusal_status(IncomingRefusal.DISK_LOW, 256, 1024) == (
        0xA700,  # out of resources: worth a retry once space is freed
        "disk almost full: less than 1024 MB free (ECHO_MIN_FREE_MB)",
    )
    assert len(refusal_status(IncomingRefusal.DISK_LOW, 256, 10**40)[1]) == 64


def test_success_carries_no_detail() -> None:
    assert store_status(IngestResult(IngestOutcome.STORED_AGAIN, "stored again", 1)) == (
        0x0000,
        "re-sent instance stored again",
    )


@pytest.mark.parametrize(
    ("callers", "calling", "called", "host", "expected"),
    [
        ("", "ANYONE", "ECHO", "10.0.0.9", None),
        ("PACS", "PACS", "ECHO", "10.0.0.9", None),
        ("PACS@10.0.0.1", "PACS", "ECHO", "10.0.0.1", None),
        ("PACS@10.0.0.1", "PACS", "ECHO", "10.0.0.2", Refusal.CALLING_AE_NOT_RECOGNISED),
        ("PACS,MODALITY@10.0.0.3", "OTHER", "ECHO", "10.0.0.3", Refusal.CALLING_AE_NOT_RECOGNISED),
        ("PACS", "PACS", "NOT-ECHO", "10.0.0.9", Refusal.CALLED_AE_NOT_RECOGNISED),
        ("", "ANYONE", "echo", "10.0.0.9", Refusal.CALLED_AE_NOT_RECOGNISED),  # AE titles are case-sensitive
    ],
)
def test_access_policy(callers: str, calling: str, called: str, host: str, expected: Refusal | None) -> None:
    policy = AccessPolicy("ECHO", parse_callers(callers))
    assert policy.open_to_all is (callers == "")
    assert policy.check(calling, called, host) is expected
