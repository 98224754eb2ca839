"""Several studies per engine pass on a GPU worker (ECHO_GPU_BATCH > 1).

The task for one study (the lead) claims it as `StudyInference.run` does, then claims up to
`size - 1` other queued studies (`worker.batch_claims`), and runs each study through the same
steps as a study alone (`worker.inference`):

    claim each (own job row)  ->  heartbeat each  ->  prepare each (view, plan, pixel budget)
    ->  read each chosen image (a study whose image cannot be read is drafted alone: it fails alone)
    ->  ONE engine.generate_batch over the readable images (the served decoding, one-step per block)
    ->  per study, first those whose draft passes the gate: gate, freeze the identity, ONE transaction
    ->  then those the gate sent back: re-decoded alone (multi-step), gated again, stored

So a study's failure (an unusable image, a draft the gate holds, an identity that cannot be frozen)
is settled by `StudyInference.settle` for that study only, and never fails or waits for the others'
commits. A study already drafted by this model version is reused, never drafted twice (the claim and
`plan_draft` hold as for a study alone); the companions' own messages later find them inferred and
finish as no-ops. A companion whose attempt fails for a reason that is not its own (the database,
the spool, a time limit) is published again and, its newest attempt failed, is drafted alone by its
own task, with that task's retries. A worker killed mid-batch leaves each claimed study a running
attempt whose process is gone: the next claim or the reconciler buries it, as for a study alone,
and the study is drafted alone afterwards. The batch holds its studies' display pixels at once (each
within ECHO_MAX_PIXEL_MEGABYTES), as `generate_batch` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from echo.errors import one_line
from echo.runtime.result import GeneratedReport
from node.config.logs import study_context
from node.store.models import Study
from node.store.states import StudyState
from node.store.transitions import IllegalTransition
from worker.batch_claims import claim_companions, fresh, newest_attempt
from worker.heartbeat import Heartbeat
from worker.inference import StudyInference
from worker.prepared import InferenceResult, PreparedStudy, ReportEngine

log = logging.getLogger(__name__)
T = TypeVar("T")
Outcome = InferenceResult | BaseException  # a lead's error is raised by `run`, after the others


@dataclass(frozen=True)
class Member:
    study_id: int
    job_id: int
    lead: bool  # the study whose message runs the batch


class RedecodeLater(Exception):
    """The gate wants the batch's draft of a study decoded again: done after the others are stored."""


class DecodedOnce:
    """An engine whose served decoding of one image was done in the batch: the draft gate's first
    `generate` (no options) gets that draft; a re-decode (options given) runs on `engine`, alone,
    unless `later` is set, which defers it (`RedecodeLater`)."""

    def __init__(self, engine: ReportEngine, first: GeneratedReport, *, later: bool = False) -> None:
        self.engine, self.first, self.later = engine, first, later

    @property
    def model_dir(self) -> Any:
        return self.engine.model_dir

    @property
    def manifest(self) -> Any:
        return self.engine.manifest

    def generate(self, image: Any, **options: Any) -> GeneratedReport:
        if not options:
            return self.first
        if self.later:
            raise RedecodeLater
        return self.engine.generate(image, **options)


class BatchInference:
    """`StudyInference.run` for a lead study and up to `size - 1` companions, drafted together."""

    def __init__(
        self, inference: StudyInference, size: int, hand_over: Callable[[int], None] = lambda _: None
    ) -> None:
        self.inference = inference
        self.size = size
        self.hand_over = hand_over  # called with each stored companion report that has deliveries

    def run(self, study_id: int, task_id: str | None) -> InferenceResult:
        """The lead's result, as `StudyInference.run` gives it (its error raised the same way, once
        every companion is settled); the companions' reports are handed over before it returns."""
        claimed = self.inference.claim(study_id, task_id)
        if isinstance(claimed, InferenceResult):
            return claimed
        members = [Member(study_id, claimed, True)]
        members += [Member(other, job, False) for other, job in self._companions(study_id, claimed, task_id)]
        outcomes = self._run(members)
        for member in members[1:]:
            result = outcomes[member.study_id]
            with study_context(member.study_id):
                log.info("study %d (batch of study %d): %s", member.study_id, study_id, _described(result))
            if isinstance(result, InferenceResult) and result.report_id is not None and result.delivery_ids:
                self.hand_over(result.report_id)
        lead = outcomes[study_id]
        if isinstance(lead, BaseException):
            raise lead
        return lead

    # ---- claims -----------------------------------------------------------------------------------

    def _companions(self, lead_id: int, job_id: int, task_id: str | None) -> list[tuple[int, int]]:
        """Companions claimed for the lead; none when it is to be drafted alone (its last attempt
        failed or died) or when a single lost attempt would fail a study (ECHO_MAX_DEAD_ATTEMPTS 1:
        a crash of one batch member would fail every other)."""
        if self.size < 2 or self.inference.settings.max_dead_attempts < 2:
            return []
        try:
            with self.inference.sessions.begin() as session:
                if not fresh(newest_attempt(session, lead_id, besides=job_id)):
                    return []
                return claim_companions(
                    session,
                    lead_id,
                    self.size - 1,
                    lambda claiming, other: self.inference.claim_in(claiming, other, task_id),
                )
        except (OperationalError, IllegalTransition) as error:
            log.warning("study %d drafted alone: no companions claimed (%s)", lead_id, one_line(error))
            return []

    # ---- the batch --------------------------------------------------------------------------------

    def _run(self, members: list[Member]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        by_study = {member.study_id: member for member in members}
        inference = self.inference
        try:
            with ExitStack() as beats:
                for member in members:
                    beats.enter_context(
                        Heartbeat(
                            inference.sessions, member.job_id, inference.heartbeat_interval_s, inference.clock
                        )
                    )
                ready: list[PreparedStudy] = []
                for member in members:
                    prepared = self._step(member, lambda m=member: inference.prepare(m.study_id, m.job_id))
                    if isinstance(prepared, PreparedStudy):
                        ready.append(prepared)
                    else:
                        outcomes[member.study_id] = prepared
                firsts = self._first_drafts([study for study in ready if study.needs_draft])
                later: list[PreparedStudy] = []
                for study in ready:  # the drafts the gate passes (and reuses) are stored first
                    first = firsts.get(study.study_id)
                    if study.needs_draft and first is None:
                        later.append(study)
                        continue
                    stored = self._step(by_study[study.study_id], lambda s=study, f=first: self._store(s, f))
                    if isinstance(stored, RedecodeLater):
                        later.append(study)
                    else:
                        outcomes[study.study_id] = stored
                for study in later:  # alone: re-decoded by the gate, or an image the batch could not read
                    first = firsts.get(study.study_id)
                    engine = None if first is None else DecodedOnce(study.engine, first)
                    outcomes[study.study_id] = self._step(
                        by_study[study.study_id],
                        lambda s=study, e=engine: inference.complete(s, inference.draft(s, e)),
                    )
        except BaseException as error:  # the batch was cut short (a time limit, a bug, the engine failed)
            for member in members:
                if member.study_id not in outcomes:
                    outcomes[member.study_id] = self._settled(member, error)
            if not isinstance(error, Exception):  # an interrupt or an exit: not the task's to swallow
                raise
        return outcomes

    def _store(self, study: PreparedStudy, first: GeneratedReport | None) -> InferenceResult:
        """Gate the batch's draft and store it; `RedecodeLater` when the gate wants it decoded again."""
        gated = (
            None
            if first is None
            else self.inference.draft(study, DecodedOnce(study.engine, first, later=True))
        )
        return self.inference.complete(study, gated)

    def _first_drafts(self, studies: list[PreparedStudy]) -> dict[int, GeneratedReport]:
        """The served decoding's draft of each study whose image could be read, in one
        `generate_batch` per engine (up to its max_batch rows a pass; with causal prompts images of
        different grids share a pass, left-padded: echo.runtime.batching)."""
        from echo.runtime.images import display_pixels  # the engine's own reader (no onnxruntime)

        pixels: dict[int, np.ndarray] = {}
        for study in studies:
            try:
                pixels[study.study_id] = display_pixels(study.image)
            except Exception:  # drafted alone: its own failure, reported as for a study alone
                continue
        groups: dict[int, list[PreparedStudy]] = {}
        for study in studies:
            if study.study_id in pixels and hasattr(study.engine, "generate_batch"):
                groups.setdefault(id(study.engine), []).append(study)
        firsts: dict[int, GeneratedReport] = {}
        for group in groups.values():
            if len(group) == 1:  # one study: decoded alone, as without batching
                continue
            images = [pixels[study.study_id] for study in group]
            try:
                reports = group[0].engine.generate_batch(images)  # type: ignore[attr-defined]
            except SoftTimeLimitExceeded:
                raise
            except Exception as error:  # the batch itself failed (memory for this size): each alone
                log.warning(
                    "a batch of %d failed (%s): each study decoded alone", len(group), one_line(error)
                )
                continue
            firsts.update((study.study_id, report) for study, report in zip(group, reports, strict=True))
        return firsts

    # ---- outcomes ---------------------------------------------------------------------------------

    def _step(self, member: Member, step: Callable[[], T]) -> T | Outcome:
        """One study's step; its error settled for that study alone."""
        with study_context(member.study_id):
            try:
                return step()
            except RedecodeLater as later:
                return later
            except Exception as error:
                return self._settled(member, error)

    def _settled(self, member: Member, error: BaseException) -> Outcome:
        """`StudyInference.settle` for one member. What it raises again (the lead's retry) is the
        lead's outcome; a companion is published again instead, to be drafted alone."""
        with study_context(member.study_id):
            try:
                return self.inference.settle(member.study_id, member.job_id, error)
            except BaseException as raised:
                if member.lead:
                    return raised
                self._publish_again(member.study_id, raised)
                return InferenceResult("skipped", f"its attempt failed in a batch: {one_line(raised)}")

    def _publish_again(self, study_id: int, error: BaseException) -> None:
        try:
            with self.inference.sessions.begin() as session:
                session.execute(
                    update(Study)
                    .where(Study.id == study_id, Study.state == StudyState.QUEUED)
                    .values(enqueued_at=None)  # the assembly sweep publishes it (node.dicom.assembly)
                )
        except Exception:  # the database is what failed: the reconciler republishes it later
            log.warning("study %d: its failed batch attempt is left to the reconciler", study_id)
            return
        log.warning(
            "study %d: its attempt in a batch failed (%s); published again", study_id, one_line(error)
        )


def _described(outcome: Outcome) -> str:
    if isinstance(outcome, InferenceResult):
        return f"{outcome.outcome} ({outcome.detail})"
    return f"failed ({one_line(outcome)})"
