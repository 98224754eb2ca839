"""The closed vocabularies the database stores, and the one table of legal study moves.

Values are stored as lower-case strings (CHECK-constrained), so an operator reading the database
with ``psql`` or ``sqlite3`` sees the same words as the admin CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class StudyState(StrEnum):
    RECEIVED = "received"  # instances arriving; not yet quiet
    COMPLETE = "complete"  # quiet period over; deciding whether to infer
    QUEUED = "queued"  # inference task published (or about to be: see studies.enqueued_at)
    INFERRED = "inferred"  # a report exists
    DELIVERED = "delivered"  # SR and/or ORU accepted by their targets
    SKIPPED = "skipped"  # not drafted (not a chest radiograph, a lateral alone); studies.skip_reason says why
    FAILED = "failed"  # gave up; the study_events row says why


# The study state machine: every move `transition()` allows, and nothing else.
STUDY_TRANSITIONS: Mapping[StudyState, frozenset[StudyState]] = {
    StudyState.RECEIVED: frozenset({StudyState.COMPLETE, StudyState.FAILED}),
    StudyState.COMPLETE: frozenset({StudyState.QUEUED, StudyState.SKIPPED, StudyState.FAILED}),
    StudyState.QUEUED: frozenset({StudyState.INFERRED, StudyState.FAILED}),
    # A frontal view arriving after a draft read from a lateral (or a view nothing marked) sends the
    # study back for a corrected draft (`node.store.redraft`); any other late instance does not.
    StudyState.INFERRED: frozenset({StudyState.DELIVERED, StudyState.FAILED, StudyState.QUEUED}),
    StudyState.DELIVERED: frozenset({StudyState.QUEUED}),
    # A CR/DX instance arriving for a skipped study (the frontal a lateral waited for) reopens it.
    StudyState.SKIPPED: frozenset({StudyState.RECEIVED}),
    StudyState.FAILED: frozenset({StudyState.QUEUED}),  # an operator re-queues a failed study
}


class AssociationOutcome(StrEnum):
    ACCEPTED = "accepted"  # open: still transferring (or the process died; closed as aborted at start)
    REJECTED = "rejected"
    RELEASED = "released"
    ABORTED = "aborted"


class JobKind(StrEnum):
    INFER = "infer"
    DELIVER = "deliver"


class JobState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"  # its worker vanished (killed, lost, past the hard time limit)


class DeliveryKind(StrEnum):
    SR = "sr"  # the narrative SR (TID 2000), to ECHO_PACS
    AIR = "air"  # the IHE AI Results SR (TID 1500), to ECHO_PACS
    ORU = "oru"  # the preliminary ORU^R01, to ECHO_RIS
    FHIR = "fhir"  # the FHIR R4 DiagnosticReport, to ECHO_FHIR (a server or a folder)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"
    HELD = "held"  # stopped for an operator: the message would not match its frozen identity


class ModelRole(StrEnum):
    """Where a model version stands in the site's learning loop (revision 0006)."""

    REGISTERED = "registered"  # loaded by a worker from ECHO_MODEL_DIR; never through the gate
    CANDIDATE = "candidate"  # retrained on site data; waits for the promotion gate
    SERVING = "serving"  # promoted: workers serve it (at most one); overrides ECHO_MODEL_DIR
    RETIRED = "retired"  # served once; `echo-admin rollback` can bring it back
    REJECTED = "rejected"  # failed the promotion gate


class SignedSource(StrEnum):
    """How a signed report reached the node."""

    HL7 = "hl7"  # the inbound MLLP listener (ORU^R01 final / corrected, MDM^T02)
    IMPORT = "import"  # `echo-admin import` from a historical archive


# How the error of an inference attempt whose draft the draft gate held begins (counted by echo-admin).
DRAFT_GATE_HELD = "draft gate"
