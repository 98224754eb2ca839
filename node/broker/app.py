"""The Celery app as the node knows it: broker, queue and task names, delivery guarantees, in one place.

The node publishes by task name and reads queue depths; it never imports task code. The worker
(`worker.app`) builds the same app with its tasks included.

Delivery guarantees: a message is acknowledged after its task returns (acks_late) and handed
back to the broker when the worker process dies mid-task (reject_on_worker_lost); each worker
process takes one message at a time (prefetch 1: inference is long, a prefetched message would
wait behind it). JSON only. No result backend: every outcome is a row in our database.

The tasks' time limits live here too, because the broker's redelivery has to agree with them: on
Redis a message that is not acknowledged within the transport's visibility timeout is handed to
another worker, so that timeout is the longest hard limit plus a margin (Redis' own default,
one hour, delayed a study by an hour after its worker was killed). The database, not the broker,
is the source of truth for what still needs doing (`node.store.reconcile`).
"""

from __future__ import annotations

from celery import Celery
from kombu.exceptions import ChannelError

from node.config.settings import Settings

INFERENCE_QUEUE = "gpu"
DELIVERY_QUEUE = "io"
QUEUES = (INFERENCE_QUEUE, DELIVERY_QUEUE)  # what serving a node needs (the embedded worker takes both)
# Retraining (`echo-admin retrain --queue`): hours of work, for a worker started with `-Q train` on a
# GPU host; never taken by the embedded worker, whose one process drafts the studies.
TRAIN_QUEUE = "train"
WORKER_QUEUES = (*QUEUES, TRAIN_QUEUE)

INFER_STUDY = "echo.infer_study"
DELIVER_REPORT = "echo.deliver_report"
DELIVERY_TASKS = "echo.deliver_*"  # every delivery task is named under this prefix
RETRAIN_MODEL = "echo.retrain_model"

INFER_SOFT_TIME_LIMIT_S = 300  # SoftTimeLimitExceeded raised inside the task: it can record the failure
INFER_TIME_LIMIT_S = 360  # the pool kills the process; a claim older than this is dead
DELIVER_SOFT_TIME_LIMIT_S = 300
DELIVER_TIME_LIMIT_S = 330
VISIBILITY_MARGIN_S = 60
# Redis hands an unacknowledged message to another worker after this long: past every hard limit.
REDIS_VISIBILITY_TIMEOUT_S = max(INFER_TIME_LIMIT_S, DELIVER_TIME_LIMIT_S) + VISIBILITY_MARGIN_S
REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+socket", "sentinel"})


def is_redis(broker_url: str) -> bool:
    return broker_url.partition("://")[0].lower() in REDIS_SCHEMES


# The embedded broker's transport: kombu's SQL transport woken by each publish (node.broker.sql_transport).
EMBEDDED_TRANSPORT = "node.broker.sql_transport:Transport"
EMBEDDED_PREFIX = "sqla+"


class EchoCelery(Celery):
    """A Celery app that carries the node's Settings to the tasks (the worker's tasks read them)."""

    def __init__(self, settings: Settings, include: tuple[str, ...] = ()) -> None:
        super().__init__("echo", broker=broker_connection_url(settings), include=list(include))
        self.echo_settings = settings


def broker_connection_url(settings: Settings) -> str:
    """The URL Celery connects with: the embedded broker's without its `sqla+` prefix, which would
    choose kombu's own transport over ours (`broker_transport`)."""
    url = settings.effective_broker_url
    return url.removeprefix(EMBEDDED_PREFIX) if settings.embedded_broker else url


def create_app(settings: Settings, include: tuple[str, ...] = ()) -> EchoCelery:
    """The app; `include` names the task modules a worker imports (the node publishes by name only)."""
    app = EchoCelery(settings, include)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_routes={
            INFER_STUDY: {"queue": INFERENCE_QUEUE},
            DELIVERY_TASKS: {"queue": DELIVERY_QUEUE},
            RETRAIN_MODEL: {"queue": TRAIN_QUEUE},
        },
        task_default_queue=INFERENCE_QUEUE,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
        timezone="UTC",
    )
    if settings.embedded_broker:
        # Woken by each publish; polls once a second besides, as kombu's own SQL transport does.
        app.conf.broker_transport = EMBEDDED_TRANSPORT
        # kombu's SQL transport hands these to create_engine: wait for SQLite's lock, never fail on it.
        app.conf.broker_transport_options = {"connect_args": {"timeout": 30}}
    elif is_redis(settings.effective_broker_url):
        app.conf.broker_transport_options = {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S}
    return app


def queue_depths(app: Celery, timeout_s: float = 3.0, queues: tuple[str, ...] = QUEUES) -> dict[str, int]:
    """Messages waiting per queue (raises the transport's error when the broker is unreachable)."""
    depths: dict[str, int] = {}
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout_s)
        channel = connection.default_channel
        for queue in queues:
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:  # never declared: nothing was ever sent to it
                depths[queue] = 0
    return depths
