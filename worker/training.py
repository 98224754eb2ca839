"""The retraining task (queue "train"): `echo-admin retrain --queue` sends its options here, and a
worker started with `echo-worker -Q train` on a GPU host runs the same code the CLI runs
(`node.learning.retrain`), with the stages' output in its log.

Acknowledged when taken, not when done (unlike inference): a retraining run takes hours, far past
the broker's redelivery timeout, and a second worker must never start the same run. A run cut off
(the worker killed, the host restarted) is resumed by sending it again: the work folder keeps every
finished stage and the interrupted stage's last checkpoint.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from echo.errors import UserError
from node.broker.app import RETRAIN_MODEL
from node.learning.retrain import RetrainOptions, retrain
from worker.tasks import EchoTask

log = logging.getLogger(__name__)


@shared_task(bind=True, base=EchoTask, name=RETRAIN_MODEL, acks_late=False, ignore_result=True)
def retrain_model(self: EchoTask, options: dict[str, Any]) -> str:
    """Retrain, export, register the candidate and gate it; returns what came of it (for the log)."""
    try:
        result = retrain(
            self.database.sessions, self.settings, RetrainOptions.from_json(options), say=log.info
        )
    except UserError as error:  # a path this host cannot see, a stage that failed: one line in the log
        log.error("retrain_model: %s", error)
        return f"failed: {error}"
    verdict = "passed" if result.gate["passed"] else "rejected: " + "; ".join(result.gate["reasons"])
    summary = f"candidate version {result.candidate_id}: gate {verdict}" + (
        ", promoted" if result.promoted else ""
    )
    log.info("retrain_model: %s", summary)
    return summary
