"""The worker's Celery app: the node's app (`node.broker.app`) with the task modules included."""

from __future__ import annotations

from node.broker.app import EchoCelery, create_app
from node.config.settings import Settings

TASK_MODULES = ("worker.tasks", "worker.training")


def create_worker_app(settings: Settings) -> EchoCelery:
    return create_app(settings, include=TASK_MODULES)
