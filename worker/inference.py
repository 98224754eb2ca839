"""One study's inference, from the claim to the committed report and its outbox rows.

    claim an attempt (node.store.jobs)  ->  read the instances' headers from the spool  ->  pick the frontal
    ->  check the image's decoded size against the pixel budget
    ->  generate (the engine preprocesses: MONOCHROME1, VOI LUT / window, rescale, resize)
    ->  ONE transaction: model version, report, delivery rows, queued -> inferred, job succeeded

While an attempt runs, a heartbeat thread refreshes its job row (`jobs.heartbeat_at`), so that the
node's reconciler (`node.store.reconcile`) can tell a live attempt from one whose process died.

Errors are sorted once, here:
- transient (`TransientInferenceError`, a database OperationalError): the job is marked failed and the
  exception propagates, so the Celery task retries it with backoff; the last failure is dead-lettered
  by the task (`worker.dead_letter`);
- the study itself is unusable (`UnusableStudy`: no readable image, an image the model cannot read
  or that would not fit the pixel budget, an empty report): the job fails and the study is failed
  with the reason, at once, never retried;
- the process dies (killed, out of memory, a crash in a native decoder): the attempt is buried by the
  next claim or the reconciler; after `max_dead_attempts` such attempts in a row the study is failed.

Idempotent on (study, model version): a report that exists is reused, never written twice, and its
delivery rows are created only if it has none. One exception makes a new report: the study's newest
draft was read from a non-frontal view (a lateral the site allowed, or an image nothing marked) and
a frontal view is there now (it arrived late and sent the study back, see `node.store.redraft`).
Then the next revision is written from the frontal, superseding that draft: a freshly frozen
identity, new delivery rows (a new SR SOP Instance UID, a new HL7 control id), and the superseded
draft's rows that have not gone out are stopped (`node.delivery.supersede.stop_superseded`), all in the
same transaction. Run again, the task finds that revision and reuses it. A frontal that arrives while
a non-frontal is being read finds the study still queued (ingest leaves it alone): the attempt sees
it when it stores its draft, under the study's row lock, and queues the study again.

The steps (`claim`, `prepare`, `draft`, `complete`, and `settle` for an error) are methods of their
own, so that `worker.batch` runs the same ones for several studies drafted in one engine pass
(ECHO_GPU_BATCH). The parts live beside this module: the failure kinds in `worker.failures`, the
spool reads in `worker.source_images`, the reuse-or-supersede decision in `worker.revisions`, the
heartbeat in `worker.heartbeat`, what the steps pass along in `worker.prepared`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from echo.errors import UserError, one_line
from echo.runtime.draft_check import DraftGate, GatedDraft, gated_generate
from node.config.settings import Settings
from node.delivery.messages import destinations, new_delivery
from node.delivery.supersede import stop_superseded
from node.store.jobs import Claim, WorkerProcess, claim_inference, finish_job, pid_alive
from node.store.model_versions import ModelFacts, activate, find_or_create, model_facts_of
from node.store.models import Delivery, Instance, Job, Report, Study, utcnow
from node.store.redraft import request_redraft
from node.store.states import DRAFT_GATE_HELD, JobState, StudyState
from node.store.transitions import IllegalTransition, transition
from worker.failures import TransientInferenceError, UnusableStudy
from worker.heartbeat import Heartbeat
from worker.prepared import InferenceResult, PreparedStudy, ReportEngine
from worker.report_text import EmptyReport, clean_report
from worker.revisions import frontal_arrived, plan_draft
from worker.source_images import check_pixel_budget, frozen_identity, read_candidates, read_chosen_header
from worker.views import ViewCandidate, ViewPick, pick_frontal

__all__ = [
    "InferenceResult",
    "PreparedStudy",
    "ReportEngine",
    "StudyInference",
    "model_facts",
    "register_model",
]

log = logging.getLogger(__name__)


def model_facts(engine: ReportEngine) -> ModelFacts:
    """The row the model_versions table keeps; the sha256 is of manifest.json, which lists every file's."""
    return model_facts_of(Path(engine.model_dir), engine.manifest)


def register_model(sessions: sessionmaker[Session], facts: ModelFacts) -> int:
    """The model version's row id, created if new and made active (the one a worker serves now)."""
    try:
        with sessions.begin() as session:
            row = find_or_create(session, facts)
            activate(session, row)
            return row.id
    except IntegrityError:  # another worker activated its model in the same instant: keep theirs
        with sessions.begin() as session:
            return find_or_create(session, facts).id


class StudyInference:
    """Runs inference for one study at a time; `engine` is called only when a report must be written."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        engine: Callable[[], ReportEngine],
        model_version_id: Callable[[ReportEngine], int],
        *,
        stale_after: timedelta,
        clock: Callable[[], datetime] = utcnow,
        worker: Callable[[], WorkerProcess] = WorkerProcess.current,
        is_alive: Callable[[int], bool] = pid_alive,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.engine = engine
        self.model_version_id = model_version_id
        self.stale_after = stale_after
        self.clock = clock
        self.worker = worker
        self.is_alive = is_alive
        self.heartbeat_timeout = timedelta(seconds=settings.heartbeat_timeout_seconds)
        # Six beats per timeout: one lost beat (a busy database) never makes a live attempt look dead.
        self.heartbeat_interval_s = settings.heartbeat_timeout_seconds / 6

    def run(self, study_id: int, task_id: str | None) -> InferenceResult:
        claimed = self.claim(study_id, task_id)
        if isinstance(claimed, InferenceResult):
            return claimed
        try:
            with Heartbeat(self.sessions, claimed, self.heartbeat_interval_s, self.clock):
                prepared = self.prepare(study_id, claimed)
                gated = self.draft(prepared) if prepared.needs_draft else None
                return self.complete(prepared, gated)
        except BaseException as error:
            return self.settle(study_id, claimed, error)

    # ---- the steps (`worker.batch` runs them for several studies at once) ---------------------------

    def claim(self, study_id: int, task_id: str | None) -> int | InferenceResult:
        """The new attempt's job id, or what was done instead (skipped, or the study failed)."""
        try:
            with self.sessions.begin() as session:
                claim = self.claim_in(session, study_id, task_id)
        except IllegalTransition as moved:  # failing a poison study raced another process's move
            return InferenceResult("skipped", str(moved))
        if claim.job_id is None:
            if claim.study_failed:
                log.error("study %d: %s", study_id, claim.reason.removeprefix(f"study {study_id} "))
                return InferenceResult("failed", claim.reason)
            return InferenceResult("skipped", claim.reason)
        return claim.job_id

    def claim_in(self, session: Session, study_id: int, task_id: str | None) -> Claim:
        """`node.store.jobs.claim_inference` with this worker's liveness rules, in the caller's transaction."""
        return claim_inference(
            session,
            study_id,
            task_id,
            self.clock(),
            self.stale_after,
            worker=self.worker(),
            heartbeat_timeout=self.heartbeat_timeout,
            max_dead_attempts=self.settings.max_dead_attempts,
            is_alive=self.is_alive,
        )

    def settle(self, study_id: int, job_id: int, error: BaseException) -> InferenceResult:
        """What an error does to the attempt: an unusable study fails at once; a study moved meanwhile
        is skipped; anything else fails the attempt and is raised again (the task retries what is
        transient and dead-letters the rest)."""
        if isinstance(error, UnusableStudy):
            return self._fail_study(study_id, job_id, str(error))
        if isinstance(error, IllegalTransition):  # an operator or another process moved the study meanwhile
            self._finish(job_id, JobState.FAILED, str(error))
            return InferenceResult("skipped", str(error))
        if isinstance(error, TransientInferenceError | OperationalError):
            self._finish_quietly(job_id, f"will retry: {one_line(error)}")
        else:  # a bug or a time limit: record it, let the task decide
            self._finish_quietly(job_id, one_line(error))
        raise error

    def prepare(self, study_id: int, job_id: int) -> PreparedStudy:
        """Everything before the engine runs: the study's images, the view picked, the model, the
        reuse-or-draft plan, and (when a draft is due) the chosen image's header within the pixel budget."""
        with self.sessions() as session:
            instances = [
                (row.id, row.path)
                for row in session.scalars(
                    select(Instance).where(Instance.study_id == study_id).order_by(Instance.id)
                )
            ]
        if not instances:
            raise UnusableStudy("the study has no stored instances")
        candidates, problems = read_candidates(instances)
        if not candidates:
            raise UnusableStudy(f"no readable image: {'; '.join(problems)}")
        pick = pick_frontal(candidates)
        if pick.fallback:  # the reason quotes header text: it goes to the report row, not the log
            log.warning("study %d: no image is marked frontal; drafting from a fallback view", study_id)
        engine = self.engine()
        model_version_id = self.model_version_id(engine)
        with self.sessions.begin() as session:
            # The attempt names the model that tried, whether its draft is stored or the gate holds it.
            session.get_one(Job, job_id).model_version_id = model_version_id
            plan = plan_draft(session, study_id, model_version_id, pick, candidates)
        header = None
        if plan.reuse_id is None:
            header = read_chosen_header(dict(instances)[pick.candidate.instance_id])
            check_pixel_budget(header, int(self.settings.max_pixel_megabytes * 2**20))
        return PreparedStudy(study_id, job_id, engine, model_version_id, instances, candidates, pick, header)

    def draft(self, prepared: PreparedStudy, engine: ReportEngine | None = None) -> GatedDraft:
        """The gated draft of the prepared study's image (`engine`: one whose first draft is decoded)."""
        return self._generate(engine or prepared.engine, prepared.instances, prepared.pick)

    def complete(self, prepared: PreparedStudy, gated: GatedDraft | None) -> InferenceResult:
        """Freeze the identity from the chosen image and store the report in one transaction."""
        identity = None if prepared.header is None else frozen_identity(prepared.header)
        return self._store(
            prepared.study_id,
            prepared.job_id,
            prepared.model_version_id,
            prepared.pick,
            gated,
            identity,
            prepared.candidates,
            prepared.read_ids,
        )

    def _generate(self, engine: ReportEngine, instances: list[tuple[int, str]], pick: ViewPick) -> GatedDraft:
        """The served decoding's draft, through the draft gate: a broken draft (duplicated words, a
        missing section, low confidence) is decoded again with more steps, then one token per step;
        still broken, no draft is sent and the study fails with the reason (`echo-admin requeue`
        tries again)."""
        path = dict(instances)[pick.candidate.instance_id]
        try:
            if not self.settings.draft_gate:  # the site turned the gate off: the draft as decoded
                draft = engine.generate(Path(path))
                return GatedDraft(draft, (), (draft,), ())
            gate = DraftGate(min_mean_confidence=self.settings.draft_min_confidence or None)
            gated = gated_generate(engine, Path(path), gate)
        except UserError as error:  # echo's image reading: unreadable pixels, unsupported encoding
            raise UnusableStudy(f"the model cannot read the chosen image: {error}") from error
        except FileNotFoundError as error:
            raise UnusableStudy("the chosen image left the spool before it was read") from error
        if gated.problems:
            raise UnusableStudy(
                f"{DRAFT_GATE_HELD}: {'; '.join(gated.problems)} (decoded {len(gated.drafts)} ways, last as "
                f"{gated.report.decoding}); no draft sent"
            )
        return gated

    def _store(
        self,
        study_id: int,
        job_id: int,
        model_version_id: int,
        pick: ViewPick,
        gated: GatedDraft | None,
        identity: dict[str, Any] | None = None,
        candidates: list[ViewCandidate] | None = None,
        read_ids: frozenset[int] | None = None,
    ) -> InferenceResult:
        now = self.clock()
        stopped: list[int] = []
        requeued = False
        with self.sessions.begin() as session:
            study = session.get_one(Study, study_id)
            # Planned again in this transaction: another attempt may have written a draft meanwhile.
            plan = plan_draft(session, study_id, model_version_id, pick, candidates or [pick.candidate])
            report = None if plan.reuse_id is None else session.get_one(Report, plan.reuse_id)
            reused = report is not None
            if report is None:
                if gated is None:
                    raise TransientInferenceError("the study's drafts changed while it was inferred")
                generated = gated.report
                try:
                    text = clean_report(generated.findings, generated.impression)
                except EmptyReport as error:
                    raise UnusableStudy(str(error)) from error
                report = Report(
                    study_id=study_id,
                    model_version_id=model_version_id,
                    findings=text.findings,
                    impression=text.impression,
                    text=text.text,
                    tokens=generated.tokens,
                    forwards=gated.forwards,  # every decode the gate ran: what the draft cost
                    seconds=gated.seconds,
                    timings=gated.timings,
                    instance_id=pick.candidate.instance_id,
                    view_reason=pick.reason,
                    identity=identity,  # who the draft is about, frozen now: the outbox builds from it
                    decoding=generated.decoding,
                    gate=gated.outcome if self.settings.draft_gate else None,
                    revision=plan.revision,
                    supersedes_id=plan.supersedes_id,
                    created_at=now,
                )
                session.add(report)
                session.flush()
            deliveries = list(session.scalars(select(Delivery).where(Delivery.report_id == report.id)))
            if not deliveries:
                deliveries = self._outbox_rows(session, report.id, now)
            if not reused and plan.supersedes_id is not None:
                stopped = stop_superseded(session, plan.supersedes_id, report, now)
            # Locked like ingest locks it (an instance is recorded before this, or sees the outcome),
            # and after the delivery rows, in the order the outbox takes them (row, then study).
            session.refresh(study, with_for_update=True)
            if study.state is StudyState.QUEUED:
                if reused:
                    what = "report reused"
                elif plan.supersedes_id is not None:
                    what = (
                        f"report {report.id} drafted (revision {plan.revision}, "
                        f"corrects report {plan.supersedes_id} read from a non-frontal view)"
                    )
                else:
                    what = f"report {report.id} drafted"
                transition(session, study, StudyState.INFERRED, f"{what}; {pick.reason}")
                # A frontal that arrived while a non-frontal was read found the study queued, not
                # drafted: ingest left it to us. Queued again, the next run supersedes this draft.
                if pick.fallback and read_ids is not None and frontal_arrived(session, study_id, read_ids):
                    request_redraft(session, study)
                    requeued = True
            finish_job(session, job_id, JobState.SUCCEEDED, now)  # its model_version_id set before drafting
            report_id, delivery_ids = report.id, tuple(row.id for row in deliveries)
        # The node's own study id only: no accession, patient or header text (the view reason quotes
        # descriptions) in logs; the reason is on the report row.
        log.info(
            "study %d: report %d %s, %d deliveries%s",
            study_id,
            report_id,
            "reused" if reused else "stored",
            len(delivery_ids),
            f"; supersedes report {plan.supersedes_id}, {len(stopped)} of its deliveries stopped"
            if plan.supersedes_id is not None and not reused
            else "",
        )
        if requeued:
            log.info(
                "study %d queued again: a frontal view arrived while a non-frontal one was read", study_id
            )
        return InferenceResult("reported", f"report {report_id}", report_id, delivery_ids)

    def _outbox_rows(self, session: Session, report_id: int, now: datetime) -> list[Delivery]:
        """One row per configured destination; the SR UID and HL7 control id are fixed here, once."""
        rows = [
            new_delivery(report_id, kind, target, now) for kind, target in destinations(self.settings).items()
        ]
        session.add_all(rows)
        session.flush()
        return rows

    # ---- bookkeeping ------------------------------------------------------------------------------

    def _fail_study(self, study_id: int, job_id: int, reason: str) -> InferenceResult:
        with self.sessions.begin() as session:
            finish_job(session, job_id, JobState.FAILED, self.clock(), reason)
            study = session.get_one(Study, study_id)
            if study.state is StudyState.QUEUED:
                transition(session, study, StudyState.FAILED, f"inference: {reason}")
        log.warning("study %d failed: %s", study_id, reason)
        return InferenceResult("failed", reason)

    def _finish(self, job_id: int, state: JobState, error: str | None) -> None:
        with self.sessions.begin() as session:
            finish_job(session, job_id, state, self.clock(), error)

    def _finish_quietly(self, job_id: int, error: str) -> None:
        """Mark the attempt failed if the database lets us; a retry buries it otherwise (same task id)."""
        try:
            self._finish(job_id, JobState.FAILED, error)
        except Exception:  # the database is what failed: nothing more to record now
            log.warning("could not record the failure of job %d", job_id, exc_info=True)
