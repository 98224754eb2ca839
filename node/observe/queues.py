"""Queue depths for /metrics: the messages waiting in each broker queue, read at scrape time.

The broker is asked as `echo-admin status` asks it (`node.broker.app.queue_depths`): a passive queue
declare, which kombu answers with LLEN on Redis and a count of the message table on the embedded
SQLAlchemy transport. A broker that does not answer makes `echo_broker_up` 0 and leaves the depths
out; the rest of the scrape is served (the readiness probe names the broker).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from echo.errors import one_line
from node.broker.app import WORKER_QUEUES, create_app, queue_depths
from node.config.settings import Settings

log = logging.getLogger(__name__)

QUEUE_TIMEOUT_S = 2.0  # a scrape must not wait out a hung broker


class QueueCollector(Collector):
    """Messages waiting per queue: gpu (inference), io (delivery), train (retraining)."""

    def __init__(self, settings: Settings, queues: tuple[str, ...] = WORKER_QUEUES) -> None:
        self.app = create_app(settings)  # publishes nothing: only its connection settings are used
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        try:
            depths = queue_depths(self.app, timeout_s=QUEUE_TIMEOUT_S, queues=self.queues)
        except Exception as error:  # the broker is down: say so in the figures, serve the rest
            log.debug("queue depths unavailable: %s", one_line(error))
            depths = None
        yield GaugeMetricFamily(
            "echo_broker_up",
            "1 when the broker answered this scrape's queue read, else 0.",
            value=0 if depths is None else 1,
        )
        if depths is None:
            return
        waiting = GaugeMetricFamily(
            "echo_queue_messages",
            "Messages waiting in each broker queue (not yet taken by a worker).",
            labels=["queue"],
        )
        for queue, count in depths.items():
            waiting.add_metric([queue], count)
        yield waiting
