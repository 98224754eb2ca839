"""A realistic node's database, made up: what the status page looks like on a working day.

Used by `scripts/status-page-screenshot.py` (the picture in the docs) and by the status page's
tests (the browser test and the 1000-study timing). It writes rows straight through the ORM, as the
node would have left them, with the same reasons and errors the node writes:

- the last 24 hours: `studies_today` studies, more by day than by night, each received (one to three
  images), drafted after the quiet period, the queue and the model, and delivered as SR and ORU; two
  skipped, three failed (the draft gate held one, the worker was lost three times for another, the
  images of a third disagree on the patient), one ORU held for an operator, and the RIS down for the
  last 25 minutes (its ORUs retrying);
- the weeks before: `per_week` studies a week, drafted by the bundled model until the site's
  retrained version was promoted two weeks ago (the two versions, the gate's record and the
  promotion: `node.observe.sample_models`), with signed reports back for most and scored;
- every study with a made-up patient id, accession number and Study Instance UID, which the page
  must never show.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from node.observe.sample_models import HISTORY_WEEKS, PROMOTED_WEEKS_AGO, SampleModels, seed_model_versions
from node.store.models import (
    Delivery,
    DraftScore,
    Instance,
    ModelVersion,
    Report,
    SignedReport,
    Study,
    StudyEvent,
)
from node.store.states import (
    DRAFT_GATE_HELD,
    DeliveryKind,
    DeliveryStatus,
    SignedSource,
    StudyState,
)

QUIET_SECONDS = 10.0
PACS = "PACS@pacs.example:11112"
RIS = "ris.example:2575"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
RIS_DOWN = timedelta(minutes=25)
DEMO_F1, SITE_F1 = 0.31, 0.52  # the two versions' agreement with the signed reports, about

FAILURES = (
    f"inference: {DRAFT_GATE_HELD}: repeated words; no impression (decoded 3 ways, last as multistep "
    "steps=8 tau=1.00); no draft sent",
    "inference gave up: 3 attempts lost with their worker (killed or past the time limit)",
    "instances disagree on PatientID: not drafted",
)
SKIPS = (("lateral view only: waiting for a frontal", "CR"), ("body part HAND is not CHEST", "DX"))
HELD = "held: the ORU's patient does not match the draft's frozen identity (PID-3 differs)"


def seed_sample_node(
    session: Session, now: datetime, *, studies_today: int = 40, per_week: int = 18, seed: int = 7
) -> None:
    """Fill an empty, migrated database with a node's last day and its weeks before (see above)."""
    rng = random.Random(seed)
    models = seed_model_versions(session, now)
    _history(session, rng, now, models, per_week)
    _last_day(session, rng, now, models.site, studies_today)
    session.flush()


def _history(
    session: Session, rng: random.Random, now: datetime, models: SampleModels, per_week: int
) -> None:
    """Delivered studies of the weeks before the last day, most with a signed report back and scored."""
    start = now - timedelta(weeks=HISTORY_WEEKS)
    promoted = now - timedelta(weeks=PROMOTED_WEEKS_AGO)
    span = (now - timedelta(days=1) - start).total_seconds()
    for _ in range(per_week * HISTORY_WEEKS):
        received = start + timedelta(seconds=rng.uniform(0, span))
        model = models.site if received >= promoted else models.demo
        study, report = _drafted_study(session, rng, received, model, StudyState.DELIVERED)
        if rng.random() < 0.8:
            _signed_and_scored(
                session, rng, study, report, model, DEMO_F1 if model is models.demo else SITE_F1
            )


def _last_day(session: Session, rng: random.Random, now: datetime, model: ModelVersion, count: int) -> None:
    # The newest five: two still in the node, three drafted while the RIS was down.
    arrivals = sorted(
        [_daytime_arrival(rng, now) for _ in range(count - 5)]
        + [now - timedelta(minutes=minutes) for minutes in (19.3, 11.7, 3.2, 0.67, 0.07)]
    )
    special = iter(rng.sample(range(count - 6), k=6))  # the skips, failures and the held ORU, not the newest
    skipped = {next(special): reason for reason in SKIPS}
    failed = {next(special): reason for reason in FAILURES}
    held = next(special)
    for number, received in enumerate(arrivals):
        if number in skipped:
            _skipped_study(session, rng, received, *skipped[number])
        elif number in failed:
            _failed_study(session, rng, received, failed[number], model)
        elif number == count - 1:
            _study(session, rng, received, StudyState.RECEIVED, images=1)
        elif number == count - 2:
            study = _study(session, rng, received, StudyState.QUEUED)
            _events(session, study, study.last_received_at, StudyState.QUEUED)
        else:
            ris_down = received > now - RIS_DOWN
            oru = DeliveryStatus.RETRYING if ris_down else DeliveryStatus.HELD if number == held else None
            state = StudyState.DELIVERED if oru is None else StudyState.INFERRED  # until its ORU is sent
            study, report = _drafted_study(session, rng, received, model, state, oru=oru, now=now)
            if received < now - timedelta(hours=3) and rng.random() < 0.6:
                _signed_and_scored(session, rng, study, report, model, SITE_F1)


def _daytime_arrival(rng: random.Random, now: datetime) -> datetime:
    """A moment of the last day before the RIS went down, three times likelier by day than by night."""
    while True:
        moment = now - timedelta(seconds=rng.uniform(RIS_DOWN.total_seconds(), 86_400))
        if 8 <= moment.hour < 18 or rng.random() < 1 / 3:
            return moment


def _study(
    session: Session,
    rng: random.Random,
    last: datetime,
    state: StudyState,
    images: int | None = None,
    modality: str = "CR",
    skip_reason: str | None = None,
) -> Study:
    images = images or rng.choice((1, 2, 2, 2, 3))
    first = last - timedelta(seconds=rng.uniform(0.5, 4.0) * (images - 1))
    study = Study(
        study_instance_uid=f"1.2.826.0.1.3680043.10.511.{rng.getrandbits(48)}",
        accession_number=f"RX{rng.randrange(10**7, 10**8)}",
        patient_id=f"MRN{rng.randrange(10**6, 10**7)}",
        modality=modality,
        body_part="CHEST",
        state=state,
        skip_reason=skip_reason,
        first_received_at=first,
        last_received_at=last,
        enqueued_at=None,
        created_at=first,
        updated_at=last,
    )
    session.add(study)
    session.flush()
    series = f"{study.study_instance_uid}.1"
    for number in range(images):
        session.add(
            Instance(
                study_id=study.id,
                sop_instance_uid=f"{series}.{number + 1}",
                series_instance_uid=series,
                sop_class_uid=CR_STORAGE,
                path=f"/var/lib/echo/spool/{study.id}/{number + 1}.dcm",
                size=rng.randrange(4, 12) * 1_000_000,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                view_position="PA" if number == 0 else "LL",
                received_at=first + (last - first) * (number / max(images - 1, 1)),
            )
        )
    return study


def _events(
    session: Session, study: Study, start: datetime, *moves: StudyState | tuple[StudyState, datetime, str]
) -> None:
    """received -> complete (after the quiet period) -> the moves given, each a state or (state, at, reason)."""
    complete = start + timedelta(seconds=QUIET_SECONDS)
    steps: list[tuple[StudyState | None, StudyState, datetime, str | None]] = [
        (None, StudyState.RECEIVED, study.first_received_at, None),
        (StudyState.RECEIVED, StudyState.COMPLETE, complete, None),
    ]
    at = complete
    for move in moves:
        state, at, reason = move if isinstance(move, tuple) else (move, at + timedelta(seconds=0.05), None)
        steps.append((steps[-1][1], state, at, reason))
    for from_state, to_state, moment, reason in steps:
        session.add(
            StudyEvent(study_id=study.id, from_state=from_state, to_state=to_state, reason=reason, at=moment)
        )
    study.updated_at = at


def _drafted_study(
    session: Session,
    rng: random.Random,
    received: datetime,
    model: ModelVersion,
    state: StudyState,
    *,
    oru: DeliveryStatus | None = None,
    now: datetime | None = None,
) -> tuple[Study, Report]:
    study = _study(session, rng, received, state)
    queued = received + timedelta(seconds=QUIET_SECONDS + rng.uniform(0.1, 0.6))
    seconds = rng.lognormvariate(0.9, 0.25)  # the one-step student on a CPU: ~2.5 s
    drafted = queued + timedelta(seconds=rng.uniform(0.2, 2.5) + seconds)
    delivered = drafted + timedelta(seconds=rng.uniform(0.3, 1.6))
    moves: list[StudyState | tuple[StudyState, datetime, str]] = [
        (StudyState.QUEUED, queued, "queued for inference"),
        (StudyState.INFERRED, drafted, "draft stored"),
    ]
    if state is StudyState.DELIVERED:
        moves.append((StudyState.DELIVERED, delivered, "SR and ORU accepted"))
    _events(session, study, received, *moves)
    study.enqueued_at = queued
    report = Report(
        study_id=study.id,
        model_version_id=model.id,
        findings="The lungs are clear.",
        impression="No acute cardiopulmonary process.",
        text="FINDINGS: The lungs are clear.\nIMPRESSION: No acute cardiopulmonary process.",
        tokens=96,
        forwards=12,
        seconds=seconds,
        created_at=drafted,
        decoding="onestep",
        gate="redecoded" if rng.random() < 0.05 else "passed",
        revision=1,
    )
    session.add(report)
    session.flush()
    for kind, target in ((DeliveryKind.SR, PACS), (DeliveryKind.ORU, RIS)):
        status = oru if kind is DeliveryKind.ORU and oru is not None else DeliveryStatus.DELIVERED
        waiting = status is DeliveryStatus.RETRYING
        session.add(
            Delivery(
                report_id=report.id,
                kind=kind,
                target=target,
                message_id=f"{kind}-{report.id}",
                status=status,
                attempts=max(1, int(((now or delivered) - drafted).total_seconds() // 60)) if waiting else 1,
                next_attempt_at=(now + timedelta(seconds=45)) if waiting and now else None,
                last_error=f"connection refused by {RIS}"
                if waiting
                else HELD
                if status is DeliveryStatus.HELD
                else None,
                ack_code="AA" if status is DeliveryStatus.DELIVERED and kind is DeliveryKind.ORU else None,
                created_at=drafted,
                updated_at=delivered,
            )
        )
    return study, report


def _skipped_study(
    session: Session, rng: random.Random, received: datetime, reason: str, modality: str
) -> None:
    study = _study(
        session, rng, received, StudyState.SKIPPED, images=1, modality=modality, skip_reason=reason
    )
    _events(
        session,
        study,
        received,
        (StudyState.SKIPPED, received + timedelta(seconds=QUIET_SECONDS + 0.1), reason),
    )


def _failed_study(
    session: Session, rng: random.Random, received: datetime, reason: str, model: ModelVersion
) -> None:
    conflict = reason.startswith("instances disagree")
    study = _study(session, rng, received, StudyState.FAILED)
    if conflict:
        study.identity_conflict = "instances disagree on PatientID"
        _events(
            session,
            study,
            received,
            (StudyState.FAILED, received + timedelta(seconds=QUIET_SECONDS + 0.1), reason),
        )
        return
    queued = received + timedelta(seconds=QUIET_SECONDS + 0.3)
    failed = queued + timedelta(seconds=rng.uniform(8, 400))
    _events(
        session,
        study,
        received,
        (StudyState.QUEUED, queued, "queued for inference"),
        (StudyState.FAILED, failed, reason),
    )


def _signed_and_scored(
    session: Session, rng: random.Random, study: Study, report: Report, model: ModelVersion, f1: float
) -> None:
    """The radiologist's signed report, some hours later, and the draft's score against it."""
    signed_at = report.created_at + timedelta(hours=rng.uniform(0.5, 6))
    signed = SignedReport(
        source=SignedSource.HL7,
        message_key=f"RIS|{study.id}",
        message_type="ORU^R01",
        sending_facility="RIS",
        accession_number=study.accession_number,
        study_instance_uid=study.study_instance_uid,
        study_id=study.id,
        result_status="F",
        findings="Heart size normal. Lungs clear.",
        impression="No acute disease.",
        text="FINDINGS: Heart size normal. Lungs clear.\nIMPRESSION: No acute disease.",
        signed_at=signed_at,
        received_at=signed_at,
        matched_at=signed_at,
    )
    session.add(signed)
    session.flush()
    normal = rng.random() < 0.35
    positives = 0 if normal else rng.randint(1, 4)
    hits = sum(rng.random() < f1 + rng.uniform(-0.12, 0.12) for _ in range(positives))
    session.add(
        DraftScore(
            report_id=report.id,
            signed_report_id=signed.id,
            model_version_id=model.id,
            true_positives=hits,
            false_positives=int(rng.random() < (0.25 if normal else 1 - f1)),
            false_negatives=positives - hits,
            signed_normal=normal,
            edit_distance=rng.uniform(0.05, 0.6),
            impression_changed=rng.random() < 0.4,
            scored_at=signed_at,
        )
    )
