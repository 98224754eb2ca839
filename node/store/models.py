"""The node's tables (SQLAlchemy 2 typed ORM). The schema itself is made by `migrations/`.

Every timestamp is UTC and comes back timezone-aware on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from node.store.states import (
    AssociationOutcome,
    DeliveryKind,
    DeliveryStatus,
    JobKind,
    JobState,
    ModelRole,
    SignedSource,
    StudyState,
)

# Deterministic constraint names, the same on SQLite and PostgreSQL, so later migrations can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC; SQLite drops the zone, so it is put back on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum(kind: type[StrEnum], name: str) -> Enum:
    """A string column holding the enum's values, CHECK-constrained (no native PostgreSQL ENUM type)."""
    return Enum(
        kind,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[StudyState] = mapped_column(_enum(StudyState, "study_state"), index=True)
    skip_reason: Mapped[str | None] = mapped_column(Text)
    first_received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # When the inference task was handed to the broker; NULL while queued means "publish it (again)".
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Set when the instances disagree on patient or accession (revision 0003): never drafted then.
    identity_conflict: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    instances: Mapped[list[Instance]] = relationship(back_populates="study")
    events: Mapped[list[StudyEvent]] = relationship(back_populates="study", order_by="StudyEvent.id")


class Association(Base):
    """The audit log of who connected, what they sent, and how it ended."""

    __tablename__ = "associations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    calling_ae: Mapped[str] = mapped_column(String(16))
    called_ae: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    files_stored: Mapped[int] = mapped_column(Integer, default=0)
    files_failed: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[AssociationOutcome] = mapped_column(_enum(AssociationOutcome, "association_outcome"))
    reason: Mapped[str | None] = mapped_column(Text)


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    # The association that delivered it last: assembly waits until those have ended.
    association_id: Mapped[int | None] = mapped_column(
        ForeignKey("associations.id", ondelete="SET NULL"), index=True
    )
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    view_position: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    study: Mapped[Study] = relationship(back_populates="instances")


class StudyEvent(Base):
    """One row per state change of a study, written in the same transaction as the change."""

    __tablename__ = "study_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[StudyState | None] = mapped_column(_enum(StudyState, "from_state"))
    to_state: Mapped[StudyState] = mapped_column(_enum(StudyState, "to_state"))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    study: Mapped[Study] = relationship(back_populates="events")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        # At most one served model at a time.
        Index(
            "uq_model_versions_active",
            "active",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
        # At most one promoted model (revision 0006).
        Index(
            "uq_model_versions_serving",
            "role",
            unique=True,
            sqlite_where=text("role = 'serving'"),
            postgresql_where=text("role = 'serving'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    block_size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    # The learning loop (revision 0006): the version's role, the version it was retrained from (a plain
    # id: columns added in place carry no foreign key on SQLite), how it was trained, what the
    # promotion gate measured and decided, and when it was last promoted.
    role: Mapped[str] = mapped_column(String(16), default=ModelRole.REGISTERED, server_default="registered")
    parent_id: Mapped[int | None] = mapped_column(Integer)
    training: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    promoted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ModelPromotion(Base):
    """Every switch of the served model, newest last: `echo-admin rollback` reads it (revision 0006)."""

    __tablename__ = "model_promotions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    action: Mapped[str] = mapped_column(String(16))  # "promote" or "rollback"
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SignedReport(Base):
    """A report as the radiologist signed it: from the RIS over HL7 or imported from an archive.

    Matched to a study by accession number, then Study Instance UID (`study_id`, `matched_at`); one
    that arrives before its study waits unmatched. A corrected report replaces the current one for
    the same accession: the old row stays, naming its replacement (`replaced_by_id`), so the history
    is kept. `message_key` makes a message stored once however often it is sent (revision 0006).
    """

    __tablename__ = "signed_reports"
    __table_args__ = (UniqueConstraint("source", "message_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[SignedSource] = mapped_column(_enum(SignedSource, "signed_source"))
    message_key: Mapped[str] = mapped_column(String(160))  # hl7: facility|MSH-10; import: see the importer
    message_type: Mapped[str] = mapped_column(String(16))  # "ORU^R01", "MDM^T02", "import"
    sending_facility: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), index=True)
    result_status: Mapped[str] = mapped_column(String(1))  # F final, C corrected
    findings: Mapped[str] = mapped_column(Text)
    impression: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)  # the whole report text as received
    signed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    matched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    replaced_by_id: Mapped[int | None] = mapped_column(ForeignKey("signed_reports.id", ondelete="SET NULL"))
    raw: Mapped[str | None] = mapped_column(Text)  # the message (ER7) or import row as received
    parsed: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the fields read from it


class DraftScore(Base):
    """A draft scored against the signed report of its study (revision 0006).

    Per-finding agreement (the labeler on both texts), the normalised word edit distance (0: the
    radiologist signed the draft unchanged, 1: nothing kept), and whether the impression changed.
    """

    __tablename__ = "draft_scores"
    __table_args__ = (UniqueConstraint("report_id", "signed_report_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"), index=True)
    signed_report_id: Mapped[int] = mapped_column(
        ForeignKey("signed_reports.id", ondelete="CASCADE"), index=True
    )
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    true_positives: Mapped[int] = mapped_column(Integer)
    false_positives: Mapped[int] = mapped_column(Integer)
    false_negatives: Mapped[int] = mapped_column(Integer)
    signed_normal: Mapped[bool] = mapped_column(Boolean)  # the signed report names no positive finding
    edit_distance: Mapped[float] = mapped_column(Float)
    impression_changed: Mapped[bool] = mapped_column(Boolean)
    draft_labels: Mapped[dict[str, str] | None] = mapped_column(JSON)
    signed_labels: Mapped[dict[str, str] | None] = mapped_column(JSON)
    scored_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Report(Base):
    """One draft of a study. A study drafted again (a frontal arrived after a draft read from a lateral)
    keeps every draft: revision 1, 2, ... in the order written, each later one naming the draft it
    corrects (`supersedes_id`) and sent as a corrected preliminary (revision 0004)."""

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("study_id", "model_version_id", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    findings: Mapped[str] = mapped_column(Text)
    impression: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(Integer)
    forwards: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # The image the model read: the SR's evidence and the ORU's patient/order header (revision 0002).
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instances.id", ondelete="SET NULL"))
    view_reason: Mapped[str | None] = mapped_column(Text)  # why that image was the one read
    timings: Mapped[dict[str, float] | None] = mapped_column(JSON)  # seconds per stage, from the engine
    # Who the draft is about, frozen at inference (revision 0003): the SR and ORU are built from this.
    identity: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The study's draft number (1 for its first) and the draft this one corrects (revision 0004).
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id", ondelete="SET NULL"))
    # Which decoding wrote the draft and what the draft gate decided (revision 0005).
    decoding: Mapped[str | None] = mapped_column(String(64))
    gate: Mapped[str | None] = mapped_column(String(16))  # "passed" or "redecoded"


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("report_id", "kind"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"))
    kind: Mapped[DeliveryKind] = mapped_column(_enum(DeliveryKind, "delivery_kind"))
    target: Mapped[str] = mapped_column(String(255))  # AET@host:port or host:port
    message_id: Mapped[str] = mapped_column(String(64))  # SR SOP Instance UID or HL7 control id
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus, "delivery_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    ack_code: Mapped[str | None] = mapped_column(String(8))  # C-STORE status (hex) or MSA-1
    ack_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Job(Base):
    """One attempt at a task; the partial unique indexes make a duplicate attempt impossible."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index(
            "uq_jobs_infer_attempt",
            "study_id",
            "attempt",
            unique=True,
            sqlite_where=text("kind = 'infer'"),
            postgresql_where=text("kind = 'infer'"),
        ),
        Index(
            "uq_jobs_deliver_attempt",
            "delivery_id",
            "attempt",
            unique=True,
            sqlite_where=text("kind = 'deliver'"),
            postgresql_where=text("kind = 'deliver'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind, "job_kind"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    celery_task_id: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The process running the attempt and its last sign of life (revision 0003): the reconciler's facts.
    worker_host: Mapped[str | None] = mapped_column(String(255))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
