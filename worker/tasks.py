"""The tasks. Each takes ids only, re-reads the database, and is safe to run twice for one message.

- `infer_study` (queue "gpu"): `worker.inference.StudyInference` does the work; transient errors are
  retried with exponential backoff and jitter, the last failure is dead-lettered in the database
  (`InferenceTask.on_failure`), and a committed report is handed to the outbox: sent by this
  process right after the commit on the embedded node, published to an "io" worker elsewhere.
- `deliver_report` (queue "io"): one outbox tick for one report, right after it was stored (Redis
  installs); the node's delivery loop runs the same code (`node.delivery.outbox`) for everything that
  is due, and is what sends a report whose first try here failed.

Per-process resources (database engine, model, outbox) are lazy properties of the base classes:
created in the process that runs the task (the pool process, or a solo worker itself) on first use,
never at import or fork, so a slow model load cannot trip Celery's process-init timeout, and a load
that fails is tried again by the next task. The model is
chosen before each study (`worker.served_model`): the version promoted with `echo-admin promote`
when there is one, switched to without a restart, else ECHO_MODEL_DIR.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, cast

from billiard.einfo import ExceptionInfo
from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from echo.errors import UserError, one_line
from node.broker.app import (
    DELIVER_REPORT,
    DELIVER_SOFT_TIME_LIMIT_S,
    DELIVER_TIME_LIMIT_S,
    INFER_SOFT_TIME_LIMIT_S,
    INFER_STUDY,
    INFER_TIME_LIMIT_S,
    EchoCelery,
)
from node.broker.publish import CeleryPublisher
from node.config.logs import study_context
from node.config.settings import Settings
from node.delivery.outbox import Outbox
from node.store.database import Database, open_database
from node.store.models import Delivery, utcnow
from node.store.states import DeliveryStatus
from worker.batch import BatchInference
from worker.dead_letter import record_dead_letter
from worker.failures import EngineUnavailable, TransientInferenceError
from worker.inference import ReportEngine, StudyInference, model_facts, register_model
from worker.served_model import ServedModel

log = logging.getLogger(__name__)
ENGINE_MAX_BATCH = 8  # Engine.load's own default: what a worker loads with ECHO_GPU_BATCH <= 8


def load_engine(model_dir: Path, provider_setting: str = "auto", gpu_batch: int = 1) -> ReportEngine:
    """An exported model directory, checked (every file's sha256) and warmed up, as at start-up, on
    the onnxruntime providers ECHO_ORT_PROVIDER asks for (a missing one falls back, with a warning),
    decoding up to ECHO_GPU_BATCH studies per pass (never fewer than the engine's default 8)."""
    from echo.runtime import Engine  # onnxruntime: only in processes that run inference
    from echo.runtime.providers import provider_choice, session_fallback, short_name

    choice = provider_choice(provider_setting)
    if choice.fallback:
        log.warning("%s", choice.fallback)
    engine = Engine.load(model_dir, providers=choice.providers, max_batch=max(ENGINE_MAX_BATCH, gpu_batch))
    fallback = session_fallback(choice.providers, engine.providers)
    if fallback:
        log.warning("%s", fallback)
    log.info(
        "model %s %s loaded in %.1f s, running on %s (ECHO_ORT_PROVIDER=%s)",
        engine.manifest.name,
        engine.manifest.version,
        engine.start_seconds,
        short_name(engine.providers[0]),
        choice.setting,
    )
    return engine


def a_destination_is_failing(sessions: sessionmaker[Session]) -> bool:
    """A PACS or RIS did not take its last message (a row waits to be retried): the node's loop paces
    the sends to it, so that drafting does not wait out a connection timeout per study."""
    with sessions() as session:
        waiting = select(Delivery.id).where(Delivery.status == DeliveryStatus.RETRYING).limit(1)
        return session.scalar(waiting) is not None


# The time limits are the broker's (node.broker.app): Redis' visibility timeout is derived from them.
INFER_MAX_RETRIES = 5
INFER_RETRY_BACKOFF_S = 5  # first wait; doubles per retry (full jitter), capped below
INFER_RETRY_BACKOFF_MAX_S = 300
TRANSIENT_ERRORS = (TransientInferenceError, OperationalError, SoftTimeLimitExceeded)


class EchoTask(Task):
    """Per-process resources, created on first use in the worker process (never at import or fork)."""

    @property
    def settings(self) -> Settings:
        return cast(EchoCelery, self.app).echo_settings

    @cached_property
    def database(self) -> Database:
        return open_database(self.settings)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.database.sessions, self.settings)


class InferenceTask(EchoTask):
    """Adds the engine (loaded once per process) and the dead-letter record after the last try."""

    @cached_property
    def engine(self) -> ReportEngine:
        """The configured model (ECHO_MODEL_DIR): what the worker serves while none is promoted."""
        model_dir = self.settings.effective_model_dir
        try:
            return load_engine(model_dir, self.settings.ort_provider, self.settings.gpu_batch)
        except (
            Exception
        ) as error:  # missing files, bad checksum, provider failure: maybe fixed by the next try
            why = str(error) if isinstance(error, UserError) else one_line(error)  # UserError: already plain
            raise EngineUnavailable(f"cannot load the model at {model_dir}: {why}") from error

    @cached_property
    def served(self) -> ServedModel:
        """The promoted model when there is one (checked before each study), else `engine`."""
        return ServedModel(
            self.database.sessions,
            lambda: self.engine,
            lambda path: load_engine(path, self.settings.ort_provider, self.settings.gpu_batch),
            forget_configured=lambda: vars(self).pop("engine", None),
        )

    @cached_property
    def _model_version_ids(self) -> dict[tuple[str, str], int]:
        return {}

    _registered_last: tuple[str, str] | None = None  # the model this process drafted with last

    def model_version_id(self, engine: ReportEngine) -> int:
        """The engine's model_versions row, registered and made active when this process starts
        drafting with it (at the first study, and again after each switch of model)."""
        key = (engine.manifest.name, engine.manifest.version)
        if key != self._registered_last:
            self._model_version_ids[key] = register_model(self.database.sessions, model_facts(engine))
            self._registered_last = key
        return self._model_version_ids[key]

    def hand_to_outbox(self, report_id: int) -> None:
        """Send the committed report's deliveries now. With Redis an "io" worker does it (this process
        may be a GPU's); on the embedded node this process sends them itself, right after the commit,
        instead of leaving them to the node's delivery loop. Either way a failure here loses nothing:
        the rows stay due and the node's loop sends them."""
        try:
            if not self.settings.embedded_broker:
                CeleryPublisher(self.app).publish_delivery(report_id)
            elif not a_destination_is_failing(self.database.sessions):
                self.outbox.run_due(report_id)  # each outcome is logged and recorded by the outbox
        except Exception as error:
            log.warning("delivery of report %d left to the node's loop (%s)", report_id, one_line(error))

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """The task gave up (retries spent, or an error that is not retried): write the dead letter."""
        study_id = args[0] if args else kwargs.get("study_id")
        tries = (getattr(self.request, "retries", 0) or 0) + 1
        self.dead_letter(
            study_id, task_id, f"{one_line(exc)} (after {tries} {'try' if tries == 1 else 'tries'})"
        )

    def dead_letter(self, study_id: object, task_id: str | None, reason: str) -> None:
        if not isinstance(study_id, int):
            return
        try:
            record_dead_letter(self.database.sessions, study_id, task_id, reason, utcnow())
        except Exception:  # the database itself is down: the log is all that is left
            log.exception("could not write the dead letter for study %d (%s)", study_id, reason)


@shared_task(
    bind=True,
    base=InferenceTask,
    name=INFER_STUDY,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=INFER_SOFT_TIME_LIMIT_S,
    time_limit=INFER_TIME_LIMIT_S,
    ignore_result=True,
    autoretry_for=TRANSIENT_ERRORS,
    max_retries=INFER_MAX_RETRIES,
    retry_backoff=INFER_RETRY_BACKOFF_S,
    retry_backoff_max=INFER_RETRY_BACKOFF_MAX_S,
    retry_jitter=True,
)
def infer_study(self: InferenceTask, study_id: int) -> str:
    """Draft the report for one study; returns what it did (for the worker log)."""
    with study_context(study_id):  # every record logged while drafting names the study
        inference = StudyInference(
            self.database.sessions,
            self.settings,
            self.served.engine,
            self.model_version_id,
            stale_after=timedelta(seconds=INFER_TIME_LIMIT_S),
        )
        if self.settings.gpu_batch > 1:  # the studies drafted beside it are handed over by the batch
            batch = BatchInference(inference, self.settings.gpu_batch, hand_over=self.hand_to_outbox)
            result = batch.run(study_id, self.request.id)
        else:
            result = inference.run(study_id, self.request.id)
        log.info("infer_study(%d): %s (%s)", study_id, result.outcome, result.detail)
        if result.outcome == "reported" and result.delivery_ids and result.report_id is not None:
            self.hand_to_outbox(result.report_id)
        return f"{result.outcome}: {result.detail}"


@shared_task(
    bind=True,
    base=EchoTask,
    name=DELIVER_REPORT,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=DELIVER_SOFT_TIME_LIMIT_S,
    time_limit=DELIVER_TIME_LIMIT_S,
    ignore_result=True,
)
def deliver_report(self: EchoTask, report_id: int) -> str:
    """Send one report's due deliveries now (rows another runner holds are left to it)."""
    with study_context(report_id=report_id):
        tick = self.outbox.run_due(report_id)
    return f"{len(tick.delivered)} delivered, {len(tick.retrying)} retrying, {len(tick.failed)} failed"


@task_failure.connect
def _dead_letter_after_the_hard_limit(
    sender: Task | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: tuple[Any, ...] | None = None,
    **_: Any,
) -> None:
    """The pool killed the process at the hard time limit: no code of the task ran to record it, so
    the worker's main process, which sends this signal, writes the dead letter instead."""
    if isinstance(sender, InferenceTask) and isinstance(exception, TimeLimitExceeded):
        limit = f" of {exception.args[0]} s" if exception.args else ""
        sender.dead_letter(args[0] if args else None, task_id, f"killed at the hard time limit{limit}")
