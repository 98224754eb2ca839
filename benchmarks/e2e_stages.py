"""Where a study's time goes between the end of its C-STORE and the RIS's ACK: benchmarks/e2e.py's stages.

Each study's timeline is a chain of wall-clock events, read after the run from three places:

| event | source |
| --- | --- |
| sent: its C-STORE association ended | the benchmark |
| enqueued: its inference task handed to the broker | studies.enqueued_at |
| started: an inference attempt claimed it | jobs.started_at (the succeeded attempt) |
| drafted: the model's draft is being stored | reports.created_at |
| committed: report and outbox rows committed | the worker's JSON log, "study N: report M stored" |
| claimed: the outbox took its first delivery | the JSON log, "claimed deliveries ..." |
| SR done: its SRs' outcomes recorded | deliveries.updated_at of its SR rows |
| acked: the RIS answered its ORU | the benchmark's RIS |

A stage is the time between two neighbouring events; a missing event (a log line not found) leaves
the two stages beside it empty rather than guessing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, select

from node.store.models import Delivery, Job, Report, Study
from node.store.states import DeliveryKind, JobKind, JobState

STAGES = ("quiet + sweep", "queue pickup", "model", "report transaction", "delivery wait", "SR", "ORU")
STORED = re.compile(r"^study (\d+): report (\d+) (?:stored|reused)")
SR_KINDS = (DeliveryKind.SR, DeliveryKind.AIR)  # sent to the PACS in one association, before the ORU
CLAIMED = re.compile(r"^claimed deliveries ([\d, ]+)$")


@dataclass(frozen=True)
class Timeline:
    """One study's events, in seconds since the epoch; None where the source had none."""

    sent: float
    enqueued: float | None
    started: float | None
    drafted: float | None
    committed: float | None
    claimed: float | None
    sr_done: float | None
    acked: float

    @property
    def latency(self) -> float:
        return self.acked - self.sent

    def stages(self) -> dict[str, float | None]:
        points = (
            self.sent,
            self.enqueued,
            self.started,
            self.drafted,
            self.committed,
            self.claimed,
            self.sr_done,
            self.acked,
        )
        return {
            stage: (end - start if start is not None and end is not None else None)
            for stage, start, end in zip(STAGES, points[:-1], points[1:], strict=True)
        }


@dataclass
class LogEvents:
    """What the node's JSON logs say: when each study's report committed, when each delivery was claimed."""

    committed: dict[int, float]  # study id -> time of "report stored"
    claimed: dict[int, float]  # delivery id -> first claim

    @classmethod
    def read(cls, paths: Iterable[Path]) -> LogEvents:
        events = cls({}, {})
        for path in paths:
            for line in path.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue  # a line a library printed itself
                try:
                    record = json.loads(line)
                    at = datetime.fromisoformat(record["time"]).timestamp()
                except (ValueError, KeyError, TypeError):
                    continue
                message = str(record.get("message", ""))
                if stored := STORED.match(message):
                    events.committed.setdefault(int(stored.group(1)), at)
                elif claimed := CLAIMED.match(message):
                    for delivery_id in claimed.group(1).split(","):
                        events.claimed.setdefault(int(delivery_id), at)
        return events


def read_timelines(
    database_url: str, sent: dict[str, float], acked: dict[str, float], logs: LogEvents
) -> list[Timeline]:
    """The timelines of the studies in `sent` (by accession number), from the node's database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            studies = {
                row.accession_number: row
                for row in connection.execute(
                    select(Study.id, Study.accession_number, Study.enqueued_at).where(
                        Study.accession_number.in_(list(sent))
                    )
                )
            }
            ids = [row.id for row in studies.values()]
            started = dict(
                connection.execute(
                    select(Job.study_id, Job.started_at).where(
                        Job.study_id.in_(ids), Job.kind == JobKind.INFER, Job.state == JobState.SUCCEEDED
                    )
                ).all()
            )
            reports = {
                row.study_id: row
                for row in connection.execute(
                    select(Report.id, Report.study_id, Report.created_at).where(Report.study_id.in_(ids))
                )
            }
            deliveries = connection.execute(
                select(Delivery.id, Delivery.report_id, Delivery.kind, Delivery.updated_at).where(
                    Delivery.report_id.in_([row.id for row in reports.values()])
                )
            ).all()
    finally:
        engine.dispose()
    timelines = []
    for accession, sent_at in sent.items():
        study = studies[accession]
        report = reports.get(study.id)
        rows = [row for row in deliveries if report is not None and row.report_id == report.id]
        claims = [logs.claimed[row.id] for row in rows if row.id in logs.claimed]
        sr_done = [row.updated_at.timestamp() for row in rows if row.kind in SR_KINDS]
        timelines.append(
            Timeline(
                sent=sent_at,
                enqueued=_seconds(study.enqueued_at),
                started=_seconds(started.get(study.id)),
                drafted=_seconds(report.created_at) if report is not None else None,
                committed=logs.committed.get(study.id),
                claimed=min(claims) if claims else None,
                sr_done=max(sr_done) if sr_done else None,
                acked=acked[accession],
            )
        )
    return timelines


def _seconds(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


def stage_percentiles(timelines: list[Timeline], fraction: float) -> dict[str, float | None]:
    """Each stage's percentile over the timelines that have it."""
    result: dict[str, float | None] = {}
    for stage in STAGES:
        values = [value for timeline in timelines if (value := timeline.stages()[stage]) is not None]
        result[stage] = percentile(values, fraction) if values else None
    return result
