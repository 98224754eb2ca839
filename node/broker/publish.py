"""Publishing tasks from the node: by name, with ids only, so the node never imports task code."""

from __future__ import annotations

from typing import Any

from celery import Celery

from node.broker.app import DELIVER_REPORT, INFER_STUDY, RETRAIN_MODEL

# Try the broker briefly: the assembly loop comes back for anything not taken.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


class CeleryPublisher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish_inference(self, study_id: int) -> None:
        self.app.send_task(INFER_STUDY, args=[study_id], retry=True, retry_policy=PUBLISH_RETRY_POLICY)

    def publish_delivery(self, report_id: int) -> None:
        """Ask an "io" worker to send `report_id`'s deliveries now; the node's loop sends them anyway."""
        self.app.send_task(DELIVER_REPORT, args=[report_id], retry=True, retry_policy=PUBLISH_RETRY_POLICY)

    def publish_retrain(self, options: dict[str, Any]) -> str:
        """Ask a `train` worker to run `echo-admin retrain` with these options; the task's id."""
        result = self.app.send_task(
            RETRAIN_MODEL, kwargs={"options": options}, retry=True, retry_policy=PUBLISH_RETRY_POLICY
        )
        return str(result.id)
