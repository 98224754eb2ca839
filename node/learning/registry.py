"""The model registry: candidates in, one version serving, every switch recorded.

    register_candidate(session, settings, export_dir, ...)  an exported ONNX directory, kept under
                                                           DATA_DIR/models, role "candidate"
    promote(session, version, reason, force=...)           role "serving"; the one it replaces "retired"
    rollback(session, reason)                              the version served before the current one

Workers read the serving row before each study (`worker.served_model`) and switch to it without a
restart; with no serving row they serve ECHO_MODEL_DIR. Every switch is a model_promotions row
(promote or rollback, the version replaced, the reason), which is what rollback walks back through.
A version whose gate failed is promoted only with force, and the reason says so.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo.errors import UserError
from node.config.demo_model import is_demo_model_version
from node.config.settings import Settings, bundled_model_dir
from node.store.model_versions import (
    ModelFacts,
    active_version,
    find_or_create,
    model_facts_of,
    serving_version,
)
from node.store.models import ModelPromotion, ModelVersion, utcnow
from node.store.states import ModelRole

MODELS_FOLDER = "models"
STAGE_CHECKPOINTS = ("ar", "teacher", "student")  # the bundled demo's folders beside its export


class RegistryError(UserError):
    """A registry move the operator asked for that cannot be made (the message says why, in one line)."""


@dataclass(frozen=True)
class Promotion:
    model_version_id: int
    previous_id: int | None
    action: str  # promote | rollback
    reason: str
    forced: bool = False


def models_dir(settings: Settings) -> Path:
    return settings.data_dir / MODELS_FOLDER


def export_facts(model_dir: Path) -> ModelFacts:
    """The facts of an exported directory, its files checked against their sha256s (as a worker
    checks them when it loads the model)."""
    from echo.runtime.manifest import load_manifest

    return model_facts_of(model_dir, load_manifest(model_dir, verify=True))


def keep_export(settings: Settings, model_dir: Path, facts: ModelFacts) -> Path:
    """Where the export is kept: under DATA_DIR/models (copied there, whole or not at all, unless it
    is there already), so that a work folder removed later does not take a served model with it."""
    home = models_dir(settings).resolve()
    source = model_dir.resolve()
    if source.is_relative_to(home):
        return source
    target = home / f"{facts.name}-{facts.version}"
    if target.is_dir():
        kept = export_facts(target)
        if kept.sha256 != facts.sha256:
            raise RegistryError(f"{target} holds another export of version {facts.version}; move it away")
        return target
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f".{target.name}.copying"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    staging.rename(target)
    return target


def register_candidate(
    session: Session,
    settings: Settings,
    model_dir: Path,
    *,
    parent_id: int | None = None,
    training: dict[str, Any] | None = None,
) -> ModelVersion:
    """Register an exported directory as a candidate for the gate (the same export twice: one row)."""
    facts = export_facts(model_dir)
    found = session.scalars(
        select(ModelVersion).where(ModelVersion.name == facts.name, ModelVersion.version == facts.version)
    ).first()
    if found is not None and found.role not in (ModelRole.CANDIDATE, ModelRole.REJECTED):
        raise RegistryError(
            f"this export is model version {found.id} already ({found.role}): nothing new to register"
        )
    kept = keep_export(settings, model_dir, facts)
    row = found or find_or_create(
        session,
        ModelFacts(facts.name, facts.version, str(kept), facts.sha256, facts.block_size),
    )
    if found is None:
        row.role = ModelRole.CANDIDATE  # registered again, a version keeps its gate's verdict
    if parent_id is not None:
        row.parent_id = parent_id
    if training is not None:
        row.training = training
    session.flush()
    return row


def checkpoints_of(version: ModelVersion) -> dict[str, Path]:
    """The torch checkpoints a version was exported from: {"ar", "teacher", "student"}, as far as
    known. A retrained version records them (model_versions.training); the bundled demo keeps them
    beside its export; any other export names at least the checkpoint it was made from."""
    recorded = (version.training or {}).get("checkpoints") or {}
    if recorded:
        return {stage: Path(path) for stage, path in recorded.items() if path}
    if is_demo_model_version(version.version):
        base = bundled_model_dir().parent
        return {stage: base / stage for stage in STAGE_CHECKPOINTS if (base / stage).is_dir()}
    from echo.runtime.manifest import load_manifest

    try:
        source = load_manifest(version.path, verify=False).source.get("checkpoint")
    except UserError:
        return {}
    return {"student": Path(source)} if source and Path(source).is_dir() else {}


def current_version(session: Session, settings: Settings) -> ModelVersion:
    """What the workers serve now: the serving row, else the one a worker loaded last, else the
    configured ECHO_MODEL_DIR (registered here if no worker has reported with it yet)."""
    found = serving_version(session) or active_version(session)
    if found is not None:
        return found
    model_dir = settings.effective_model_dir
    try:
        facts = export_facts(model_dir)
    except UserError as error:
        raise RegistryError(f"no model is registered and ECHO_MODEL_DIR cannot be read: {error}") from None
    return find_or_create(session, facts)


def _check_files(version: ModelVersion) -> None:
    """A version whose files are missing or changed is never switched to: a worker would refuse it."""
    try:
        facts = export_facts(Path(version.path))
    except UserError as error:
        raise RegistryError(f"version {version.id} cannot be served: {error}") from None
    if facts.sha256 != version.sha256:
        raise RegistryError(
            f"version {version.id} cannot be served: {version.path} holds another export than the one registered"
        )


def gate_problem(version: ModelVersion) -> str | None:
    """Why the gate does not allow `version` (None: it passed, or it served before)."""
    gate = version.gate
    if gate is None:
        return None if version.role == ModelRole.RETIRED else "has not been through the promotion gate"
    if not gate.get("passed"):
        return f"failed the promotion gate ({'; '.join(gate.get('reasons') or ['no reason recorded'])})"
    return None


def promote(
    session: Session,
    version: ModelVersion,
    reason: str | None = None,
    *,
    force: bool = False,
    now: datetime | None = None,
) -> Promotion:
    """Make `version` the serving one; the version it replaces is retired. Refused for a version the
    gate did not pass, unless forced (the reason records it)."""
    if version.role == ModelRole.SERVING:
        raise RegistryError(f"version {version.id} is serving already")
    problem = gate_problem(version)
    if problem is not None and not force:
        raise RegistryError(f"version {version.id} {problem}: give --force to promote it anyway (recorded)")
    _check_files(version)
    at = now or utcnow()
    replaced = serving_version(session) or active_version(session)
    if replaced is not None and replaced.id == version.id:
        replaced = None  # the model the workers loaded from ECHO_MODEL_DIR, promoted as it is
    if replaced is not None:
        replaced.role = ModelRole.RETIRED
        session.flush()  # one serving row at a time (a partial unique index)
    version.role = ModelRole.SERVING
    version.promoted_at = at
    text = reason or "promoted"
    if problem is not None:
        text += f"; forced: the version {problem}"
    record = Promotion(version.id, replaced.id if replaced else None, "promote", text, problem is not None)
    return _recorded(session, record, at)


def served_before(session: Session) -> tuple[int | None, int | None]:
    """(the version serving by the promotion history, the one a rollback returns to): the history
    replayed as a stack, so that rolling back twice after A -> B -> C returns to B, then A."""
    stack: list[int | None] = []
    current: int | None = None
    for row in session.scalars(select(ModelPromotion).order_by(ModelPromotion.id)):
        if row.action == "promote":
            stack.append(row.previous_id)
        elif stack:
            stack.pop()
        current = row.model_version_id
    return current, (stack[-1] if stack else None)


def rollback(session: Session, reason: str | None = None, *, now: datetime | None = None) -> Promotion:
    """Serve again the version served before the current one (from model_promotions)."""
    serving = serving_version(session)
    if serving is None:
        raise RegistryError("no version is promoted (the workers serve ECHO_MODEL_DIR): nothing to roll back")
    current, previous_id = served_before(session)
    if current != serving.id:
        raise RegistryError(
            f"the promotion history does not end with the serving version {serving.id}: "
            "promote the version wanted with `echo-admin promote V`"
        )
    if previous_id is None:
        raise RegistryError(f"no version served before version {serving.id}: nothing to roll back to")
    previous = session.get_one(ModelVersion, previous_id)
    _check_files(previous)
    at = now or utcnow()
    serving.role = ModelRole.RETIRED
    session.flush()
    previous.role = ModelRole.SERVING
    previous.promoted_at = at
    record = Promotion(
        previous.id, serving.id, "rollback", reason or f"rolled back from version {serving.id}"
    )
    return _recorded(session, record, at)


def _recorded(session: Session, record: Promotion, at: datetime) -> Promotion:
    """`record` written to the promotion history (model_promotions), newest last."""
    session.add(
        ModelPromotion(
            model_version_id=record.model_version_id,
            previous_id=record.previous_id,
            action=record.action,
            reason=record.reason,
            at=at,
        )
    )
    session.flush()
    return record
