"""What only a worker knows, for its /metrics: the tasks it ran by outcome, and the model each pool
process holds (version and onnxruntime execution provider).

Nothing here repeats a figure the database holds (inference seconds, tokens, deliveries: those are
the node's, `node.observe.metrics`), so a dashboard that adds the worker's figures to the node's
counts nothing twice. The values are kept by whichever process runs the task; with
PROMETHEUS_MULTIPROC_DIR set (`node.observe.figures_folder`), in files the listener's process sums.
The worker app imports this module at start (`worker.app`), which connects the signal receivers.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.signals import task_failure, task_postrun, task_retry, task_success
from prometheus_client import Counter, Gauge

from node.broker.app import INFER_STUDY

TASKS = Counter(
    "echo_worker_tasks",
    "Tasks this worker ran, by task and outcome (succeeded, failed, retried).",
    ["task", "outcome"],
    registry=None,  # served by the listener (`node.observe.process_figures`), not a global registry
)
MODEL_LOADED = Gauge(
    "echo_worker_model_loaded",
    "Pool processes holding a loaded model, by model, version and onnxruntime execution provider "
    "(loaded on a process's first study; 0 for a model a process held before).",
    ["model", "version", "provider"],
    registry=None,
    multiprocess_mode="livesum",
)


class HeldModel:
    """The model label set this process shows as loaded; moves it when the engine changes."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self.labels: tuple[str, str, str] | None = None

    def show(self, engine: Any) -> None:
        labels = None if engine is None else model_labels(engine)
        if labels == self.labels:
            return
        if self.labels is not None:
            self.gauge.labels(*self.labels).set(0)
        if labels is not None:
            self.gauge.labels(*labels).set(1)
        self.labels = labels


def model_labels(engine: Any) -> tuple[str, str, str]:
    providers = getattr(engine, "providers", None) or ["unknown"]
    return engine.manifest.name, engine.manifest.version, providers[0]


def held_engine(task: Task) -> Any:
    """The engine the inference task's process drafts with now, read without loading one: the
    promoted model it holds (`ServedModel.promoted`), else ECHO_MODEL_DIR's once loaded (`engine`)."""
    promoted = getattr(vars(task).get("served"), "promoted", None)
    return promoted if promoted is not None else vars(task).get("engine")


_held = HeldModel(MODEL_LOADED)


def _name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or "unknown")


@task_success.connect
def _succeeded(sender: Task | None = None, **_: Any) -> None:
    TASKS.labels(_name(sender), "succeeded").inc()


@task_failure.connect
def _failed(sender: Task | None = None, **_: Any) -> None:
    """Sent by the pool process for a task that raised, by the main process for one killed at the hard
    time limit: each attempt is counted once."""
    TASKS.labels(_name(sender), "failed").inc()


@task_retry.connect
def _retried(sender: Task | None = None, **_: Any) -> None:
    TASKS.labels(_name(sender), "retried").inc()


@task_postrun.connect
def _model_after_inference(sender: Task | None = None, **_: Any) -> None:
    if sender is not None and sender.name == INFER_STUDY:
        _held.show(held_engine(sender))
