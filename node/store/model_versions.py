"""The model_versions table: which exported model wrote which report, and which one is served now.

A row is identified by (name, version); the version is the export's content hash, so the same
files always map to the same row on every worker. "Active" is the version a worker loaded most
recently: with one fleet serving one model, the model in service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.store.models import ModelVersion, Report, utcnow


@dataclass(frozen=True)
class ModelFacts:
    """What the worker knows about the model it loaded (from the export's manifest)."""

    name: str
    version: str
    path: str
    sha256: str  # of manifest.json, which lists every file's own sha256
    block_size: int


@dataclass(frozen=True)
class ModelVersionRow:
    id: int
    name: str
    version: str
    path: str
    block_size: int
    created_at: datetime
    active: bool
    reports: int


def find_or_create(session: Session, facts: ModelFacts) -> ModelVersion:
    """The row for `facts`, inserted if new; two workers inserting at once end with one row."""
    query = select(ModelVersion).where(ModelVersion.name == facts.name, ModelVersion.version == facts.version)
    found = session.scalars(query).first()
    if found is not None:
        return found
    row = ModelVersion(
        name=facts.name,
        version=facts.version,
        path=facts.path,
        sha256=facts.sha256,
        block_size=facts.block_size,
        created_at=utcnow(),
        active=False,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # the other worker's insert won; read its row
        return session.scalars(query).one()
    return row


def activate(session: Session, model_version: ModelVersion) -> None:
    """Make `model_version` the one active row (the partial unique index allows only one)."""
    if model_version.active:
        return
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.active.is_(True), ModelVersion.id != model_version.id)
        .values(active=False)
        .execution_options(synchronize_session="fetch")
    )
    session.flush()
    model_version.active = True
    session.flush()


def list_model_versions(session: Session) -> list[ModelVersionRow]:
    """Every version, newest first, with how many reports each wrote."""
    count = (
        select(func.count(Report.id))
        .where(Report.model_version_id == ModelVersion.id)
        .correlate(ModelVersion)
        .scalar_subquery()
    )
    query = select(ModelVersion, count).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
    return [
        ModelVersionRow(
            row.id, row.name, row.version, row.path, row.block_size, row.created_at, row.active, reports
        )
        for row, reports in session.execute(query)
    ]
