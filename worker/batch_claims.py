"""Which studies a batch may take along, and their claims (see `worker.batch`).

The task running for one study claims up to `size - 1` other studies that are queued, published (their
own message is in the broker) and fresh: no earlier inference attempt, or only a succeeded one (a
re-draft round, which the claim itself judges). A study whose last attempt failed or died is drafted
alone, by its own task, as without batching: a poison study (a crash in a native decoder) or a flaky
one then costs its companions at most the one attempt they shared with it, and a companion whose
attempt failed never comes back into a batch. Each companion is claimed with the same
`claim_inference` as a study of its own (job row, attempt number, worker process, heartbeat), under
the task id of the message that did the work; two workers racing for one study are settled by the
jobs table's unique index, as two duplicate messages are.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.store.jobs import Claim
from node.store.models import Job, Study
from node.store.states import JobKind, JobState, StudyState

# How many queued studies are looked at per place in the batch: some may be held by other workers.
CANDIDATES_PER_PLACE = 4


def newest_attempt(session: Session, study_id: int, *, besides: int | None = None) -> Job | None:
    """The study's newest inference attempt (other than the job `besides`)."""
    query = select(Job).where(Job.study_id == study_id, Job.kind == JobKind.INFER)
    if besides is not None:
        query = query.where(Job.id != besides)
    return session.scalars(query.order_by(Job.attempt.desc()).limit(1)).first()


def fresh(attempt: Job | None) -> bool:
    """Whether a study whose newest attempt is `attempt` may be drafted in a batch."""
    return attempt is None or attempt.state is JobState.SUCCEEDED


def claim_companions(
    session: Session,
    lead_id: int,
    places: int,
    claim: Callable[[Session, int], Claim],
) -> list[tuple[int, int]]:
    """Claim up to `places` fresh queued studies besides `lead_id`, oldest published first, in the
    caller's transaction; (study id, job id) of each claimed."""
    if places < 1:
        return []
    queued = session.scalars(
        select(Study.id)
        .where(Study.state == StudyState.QUEUED, Study.enqueued_at.is_not(None), Study.id != lead_id)
        .order_by(Study.enqueued_at, Study.id)
        .limit(places * CANDIDATES_PER_PLACE)
    ).all()
    claimed: list[tuple[int, int]] = []
    for study_id in queued:
        if len(claimed) == places:
            break
        if not fresh(newest_attempt(session, study_id)):
            continue
        taken = claim(session, study_id)
        if taken.job_id is not None:
            claimed.append((study_id, taken.job_id))
    return claimed
