"""Which model a worker drafts with: the promoted one, switched to without a restart.

Before each study the worker asks `engine()`. It looks up the serving version (one indexed query,
its answer kept for SERVING_CHECK_S seconds, so a busy worker asks a few times a minute, not per
study) and, when that is not the model it holds, loads the serving version's directory as the
start-up loads ECHO_MODEL_DIR: every file against its sha256 in the manifest, and the manifest
itself against the sha256 the registry recorded. With no serving version it serves ECHO_MODEL_DIR,
as a worker always has.

A promoted model that will not load (files missing or changed, a graph onnxruntime refuses) does
not take the worker down and does not fail the study: the failure is logged with the version's id,
the worker keeps drafting with the model it holds, and tries the promoted one again after
RETRY_BROKEN_S. One engine is held at a time: the one replaced is let go (GPU memory).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from echo.errors import UserError, one_line
from node.store.model_versions import model_facts_of
from node.store.models import ModelVersion
from node.store.states import ModelRole

log = logging.getLogger(__name__)

SERVING_CHECK_S = 5.0
RETRY_BROKEN_S = 60.0


@dataclass(frozen=True)
class ServingRow:
    id: int
    name: str
    version: str
    path: str
    sha256: str


class ServedModel:
    """The per-process choice of engine (`worker.tasks.InferenceTask.served`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        configured: Callable[[], object],
        load: Callable[[Path], object],
        *,
        forget_configured: Callable[[], None] = lambda: None,
        check_every_s: float = SERVING_CHECK_S,
        retry_broken_s: float = RETRY_BROKEN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.configured = configured  # the ECHO_MODEL_DIR engine, loaded on first use
        self.load = load
        self.forget_configured = forget_configured
        self.check_every_s = check_every_s
        self.retry_broken_s = retry_broken_s
        self.clock = clock
        self.promoted: object | None = None  # the promoted engine held now
        self.promoted_row: ServingRow | None = None
        self._looked_at: float | None = None
        self._serving: ServingRow | None = None
        self._broken: dict[tuple[int, str], float] = {}  # (id, sha256) -> when it last failed

    def serving(self) -> ServingRow | None:
        """The serving row, read at most once per check_every_s."""
        now = self.clock()
        if self._looked_at is None or now - self._looked_at >= self.check_every_s:
            with self.sessions() as session:
                row = session.execute(
                    select(
                        ModelVersion.id,
                        ModelVersion.name,
                        ModelVersion.version,
                        ModelVersion.path,
                        ModelVersion.sha256,
                    ).where(ModelVersion.role == ModelRole.SERVING)
                ).first()
            self._serving = ServingRow(*row) if row is not None else None
            self._looked_at = now
        return self._serving

    def engine(self) -> object:
        """The engine to draft the next study with."""
        wanted = self.serving()
        if wanted is None:
            if self.promoted is not None:
                log.info("no model version is promoted now: back to ECHO_MODEL_DIR")
                self.promoted = self.promoted_row = None
            return self.configured()
        if self.promoted_row is not None and self.promoted_row.id == wanted.id:
            return self.promoted
        key = (wanted.id, wanted.sha256)
        failed_at = self._broken.get(key)
        if failed_at is None or self.clock() - failed_at >= self.retry_broken_s:
            loaded = self._load(wanted)
            if loaded is not None:
                return loaded
            self._broken[key] = self.clock()
        return self.promoted if self.promoted is not None else self.configured()

    def _load(self, wanted: ServingRow) -> object | None:
        try:
            engine = self.load(Path(wanted.path))
            facts = model_facts_of(Path(wanted.path), engine.manifest)  # type: ignore[attr-defined]
            if (facts.name, facts.version, facts.sha256) != (wanted.name, wanted.version, wanted.sha256):
                raise UserError(f"{wanted.path} holds another export than the one registered")
        except Exception as error:  # a broken promoted model must not stop the drafts
            why = str(error) if isinstance(error, UserError) else one_line(error)
            log.error(
                "model version %d (%s) is promoted but cannot be served: %s; keeping %s",
                wanted.id,
                wanted.version,
                why,
                f"version {self.promoted_row.id}" if self.promoted_row else "ECHO_MODEL_DIR",
            )
            return None
        previous = self.promoted_row
        self.promoted, self.promoted_row = engine, wanted
        self.forget_configured()  # one engine at a time
        self._broken.pop((wanted.id, wanted.sha256), None)
        log.info(
            "switched to model version %d (%s %s)%s",
            wanted.id,
            wanted.name,
            wanted.version,
            f", replacing version {previous.id}" if previous else "",
        )
        return engine
