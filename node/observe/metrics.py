"""The node's Prometheus metrics, read from the database at scrape time.

(Queue depths come from the broker, `node.observe.queues`; what only a worker's processes know, from
`node.observe.process_figures`; the model registry's figures, `node.observe.model_metrics`.)

Every figure comes from the durable record (studies, associations, reports, deliveries, jobs), not
from in-process counters: the serve process, the workers and an `echo-admin` on another host see the
same numbers, a restart loses nothing, and a scrape costs a handful of aggregate queries. Counters are
totals since the database was created (Prometheus' `rate()` turns them into per-second figures).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Integer, func, select
from sqlalchemy.orm import Session

from node.observe.model_metrics import model_registry_metrics
from node.ops.overview import counts_by_state, draft_gate_counts, outbox_summary
from node.store.models import Association, Delivery, Instance, ModelVersion, Report, utcnow
from node.store.states import AssociationOutcome

# Seconds from image to draft: one-step CPU drafts take tens of milliseconds, a re-decoded draft on a
# busy CPU seconds.
INFERENCE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class NodeCollector(Collector):
    """Collects the node's metrics from the database (`sessions`) and the spool's disk (`spool`)."""

    def __init__(self, sessions: Callable[[], Session], spool: Path, clock: Callable[[], datetime] = utcnow):
        self.sessions = sessions
        self.spool = spool
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            yield from self._studies(session)
            yield from self._ingest(session)
            yield from self._inference(session)
            yield from self._outbox(session)
            yield from model_registry_metrics(session)
        yield from self._disk()

    def _studies(self, session: Session) -> Iterator[Metric]:
        states = GaugeMetricFamily("echo_studies", "Studies by state.", labels=["state"])
        for state, count in counts_by_state(session).items():
            states.add_metric([state.value], count)
        yield states
        gate = CounterMetricFamily(
            "echo_draft_gate_decisions", "The draft gate's decisions.", labels=["decision"]
        )
        for decision, count in draft_gate_counts(session).items():
            gate.add_metric([decision], count)
        yield gate

    def _ingest(self, session: Session) -> Iterator[Metric]:
        received = session.scalar(select(func.count()).select_from(Instance)) or 0
        yield CounterMetricFamily("echo_instances_received", "DICOM instances stored.", value=received)
        associations = CounterMetricFamily(
            "echo_associations", "DICOM associations by outcome.", labels=["outcome"]
        )
        found = dict(
            session.execute(select(Association.outcome, func.count()).group_by(Association.outcome)).all()
        )
        for outcome in AssociationOutcome:
            associations.add_metric([outcome.value], found.get(outcome, 0))
        yield associations

    def _inference(self, session: Session) -> Iterator[Metric]:
        labels = ["model_version", "decoding"]
        seconds = HistogramMetricFamily(
            "echo_inference_seconds", "Seconds from image to draft.", labels=labels
        )
        tokens = CounterMetricFamily("echo_draft_tokens", "Tokens written in drafts.", labels=labels)
        forwards = CounterMetricFamily(
            "echo_draft_forwards", "Decoder forward passes for drafts.", labels=labels
        )
        decoding = func.coalesce(Report.decoding, "unknown")
        keys = select(ModelVersion.version, decoding).join(
            ModelVersion, Report.model_version_id == ModelVersion.id
        )
        totals = keys.add_columns(
            func.count(), func.sum(Report.seconds), func.sum(Report.tokens), func.sum(Report.forwards)
        )
        bucket_columns = [func.sum((Report.seconds <= bound).cast(Integer)) for bound in INFERENCE_BUCKETS]
        rows = session.execute(
            totals.add_columns(*bucket_columns).group_by(ModelVersion.version, decoding)
        ).all()
        for version, mode, count, total_seconds, total_tokens, total_forwards, *cumulative in rows:
            buckets = [
                (str(bound), int(n or 0)) for bound, n in zip(INFERENCE_BUCKETS, cumulative, strict=True)
            ]
            seconds.add_metric([version, mode], [*buckets, ("+Inf", count)], float(total_seconds or 0.0))
            tokens.add_metric([version, mode], int(total_tokens or 0))
            forwards.add_metric([version, mode], int(total_forwards or 0))
        yield from (seconds, tokens, forwards)

    def _outbox(self, session: Session) -> Iterator[Metric]:
        deliveries = GaugeMetricFamily(
            "echo_deliveries", "Outbox rows by destination kind and status.", labels=["kind", "status"]
        )
        for kind, status, count in session.execute(
            select(Delivery.kind, Delivery.status, func.count()).group_by(Delivery.kind, Delivery.status)
        ):
            deliveries.add_metric([kind.value, status.value], count)
        yield deliveries
        oldest = outbox_summary(session).oldest_waiting
        age = 0.0 if oldest is None else max(0.0, (self.clock() - oldest).total_seconds())
        yield GaugeMetricFamily(
            "echo_outbox_oldest_waiting_seconds",
            "Age of the oldest message not yet delivered (0: none).",
            value=age,
        )

    def _disk(self) -> Iterator[Metric]:
        try:
            free = shutil.disk_usage(self.spool).free
        except OSError:
            return
        yield GaugeMetricFamily("echo_spool_free_bytes", "Free bytes on the spool's disk.", value=free)
