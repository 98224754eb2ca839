"""The worker's Celery app: the node's app (`node.broker.app`) with the task modules included.

`worker.figures` is imported with them when the worker starts (after `echo-worker` has chosen where
its pool processes keep their figures): its signal receivers count the tasks and the model held.
"""

from __future__ import annotations

from node.broker.app import EchoCelery, create_app
from node.config.settings import Settings

TASK_MODULES = ("worker.tasks", "worker.training")
FIGURES_MODULE = "worker.figures"


def create_worker_app(settings: Settings) -> EchoCelery:
    return create_app(settings, include=(*TASK_MODULES, FIGURES_MODULE))
