"""The tasks. Each takes ids only, re-reads the database, and is safe to run twice for one message.

`infer_study` claims an attempt (`node.jobs.claim_inference`) and records it. Running the model
and storing the report come with the inference issue, between the claim and `finish_job`; the
study stays "queued" until then, so that issue needs no migration.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import cached_property
from typing import cast

from celery import Task, shared_task

from node.database import Database, open_database
from node.jobs import claim_inference, finish_job
from node.models import utcnow
from node.states import JobState
from worker.app import INFER_STUDY, EchoCelery

log = logging.getLogger(__name__)

INFER_SOFT_TIME_LIMIT_S = 300  # SoftTimeLimitExceeded raised inside the task: it can record the failure
INFER_TIME_LIMIT_S = 360  # the pool kills the process; a claim older than this is dead


class EchoTask(Task):
    """Per-process resources, created on first use in the worker process (never at import or fork)."""

    @cached_property
    def database(self) -> Database:
        return open_database(cast(EchoCelery, self.app).echo_settings)


@shared_task(
    bind=True,
    base=EchoTask,
    name=INFER_STUDY,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=INFER_SOFT_TIME_LIMIT_S,
    time_limit=INFER_TIME_LIMIT_S,
    ignore_result=True,
)
def infer_study(self: EchoTask, study_id: int) -> str:
    """Draft the report for one study; returns what it did (for the worker log)."""
    with self.database.sessions.begin() as session:
        claim = claim_inference(
            session, study_id, self.request.id, utcnow(), timedelta(seconds=INFER_TIME_LIMIT_S)
        )
    if claim.job_id is None:
        log.info("infer_study(%d) skipped: %s", study_id, claim.reason)
        return f"skipped: {claim.reason}"
    with self.database.sessions.begin() as session:
        finish_job(session, claim.job_id, JobState.SUCCEEDED, utcnow())
    log.info("infer_study(%d) recorded job %d (%s)", study_id, claim.job_id, claim.reason)
    return f"job {claim.job_id} succeeded"
