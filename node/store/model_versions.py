"""The model_versions table: which exported model wrote which report, and which one is served now.

A row is identified by (name, version); the version is the export's content hash, so the same
files always map to the same row on every worker. "Active" is the version a worker loaded most
recently. "Role" is the learning loop's word (revision 0006): a version promoted through the gate
is "serving" (at most one; workers switch to it without a restart), the one it replaced "retired";
`node.learning.registry` moves roles and records each switch in model_promotions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.store.models import ModelVersion, Report, utcnow
from node.store.states import ModelRole

if TYPE_CHECKING:  # echo.runtime's package loads onnxruntime: not for every echo-admin command
    from echo.runtime.manifest import ModelManifest

SHORT_VERSION = 4  # the fewest characters of a version that may name it


class UnknownVersion(ValueError):
    """A reference that names no model version, or more than one."""


@dataclass(frozen=True)
class ModelFacts:
    """What the worker knows about the model it loaded (from the export's manifest)."""

    name: str
    version: str
    path: str
    sha256: str  # of manifest.json, which lists every file's own sha256
    block_size: int


def model_facts_of(model_dir: Path, manifest: ModelManifest) -> ModelFacts:
    """The row an exported directory maps to; the sha256 is of manifest.json, which lists every file's."""
    from echo.runtime.manifest import MANIFEST_NAME

    manifest_bytes = (Path(model_dir) / MANIFEST_NAME).read_bytes()
    return ModelFacts(
        name=manifest.name,
        version=manifest.version,
        path=str(Path(model_dir).resolve()),
        sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        block_size=manifest.generation.block_size,
    )


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
    role: str = ModelRole.REGISTERED
    parent_id: int | None = None
    training: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    promoted_at: datetime | None = None


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
        role=ModelRole.REGISTERED,
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


def serving_version(session: Session) -> ModelVersion | None:
    """The promoted version (role serving), or None: the workers then serve ECHO_MODEL_DIR."""
    return session.scalars(select(ModelVersion).where(ModelVersion.role == ModelRole.SERVING)).first()


def active_version(session: Session) -> ModelVersion | None:
    """The version a worker loaded most recently."""
    return session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).first()


def find_version(session: Session, reference: str) -> ModelVersion:
    """The one version `reference` names: its id, its version, or the start of its version (at least
    SHORT_VERSION characters); `UnknownVersion` when it names none or several."""
    spec = reference.strip()
    rows = list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))
    found = [row for row in rows if spec in (str(row.id), row.version)]
    if not found and len(spec) >= SHORT_VERSION:
        found = [row for row in rows if row.version.startswith(spec)]
    if not found:
        raise UnknownVersion(f"no model version is called {reference!r} (see `echo-admin models`)")
    if len(found) > 1:
        ids = ", ".join(str(row.id) for row in found)
        raise UnknownVersion(f"{reference!r} names {len(found)} model versions (ids {ids}); give the id")
    return found[0]


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
            row.id,
            row.name,
            row.version,
            row.path,
            row.block_size,
            row.created_at,
            row.active,
            reports,
            role=row.role,
            parent_id=row.parent_id,
            training=row.training,
            gate=row.gate,
            promoted_at=row.promoted_at,
        )
        for row, reports in session.execute(query)
    ]
