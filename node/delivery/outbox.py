"""The outbox: delivery rows (written with their report) sent to the PACS and the RIS until done.

One tick (`Outbox.run_due`):

1. claim the due rows (pending or retrying, next_attempt_at <= now) with one conditional UPDATE
   each, which pushes next_attempt_at a lease ahead and counts the attempt: two runners (the node's
   loop and an "io" worker) never send the same row at once, and a runner that dies mid-send
   leaves a row that comes due again when its lease ends;
2. send: the SRs for one PACS in one association, each ORU on its own MLLP connection; after a
   connection-level failure the rest of that RIS's ORUs wait for the next tick instead of each
   waiting out the timeout;
3. record each outcome (`node.delivery.policy.decide`) and, in the same transaction, settle the
   study: inferred -> delivered when every row of its report is delivered, -> failed when one
   failed for good.

A PACS or RIS that is down loses nothing: its rows stay retrying with growing waits and go out
when it is back (an operator can bring failed ones back with `echo-admin resend`).

A draft superseded by a corrected one (`node.store.redraft`) must never reach the PACS or RIS after
its correction: when inference writes the superseding report, `stop_superseded` ends the old
report's rows that have not gone out (pending, retrying, held) as failed, "superseded by report N"
(failed, not held: held asks an operator to look and `echo-admin resend` would release it, while
this message must never go; resend acts on the newest report only). A row that was being sent at
that moment keeps the outcome of that send if it was delivered, else it stays stopped; either way
the old report no longer settles the study, its correction does. The corrected report's messages
name what they correct (`node.delivery.messages`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from echo.errors import one_line
from exporters.dicom_sender import send_datasets
from exporters.identity import ModelIdentity
from exporters.mllp import send_hl7
from exporters.outcome import AckOutcome, SendStatus, StoreOutcome
from exporters.sr import PreviousSR
from node.config.settings import DicomPeer, MllpPeer, Settings, parse_dicom_peer, parse_mllp_peer
from node.delivery.client_tls import dicom_client_tls, mllp_client_tls
from node.delivery.identity import IdentityError, compare_with_spool, thawed_header
from node.delivery.messages import (
    header_repairs,
    model_identity,
    previous_sr,
    report_oru,
    report_sr,
    result_status,
)
from node.delivery.policy import decide
from node.delivery.settle import settle_study
from node.store.models import Delivery, Instance, ModelVersion, Report, Study, utcnow
from node.store.states import DeliveryKind, DeliveryStatus

log = logging.getLogger(__name__)

DEFAULT_BATCH = 20
LEASE_MARGIN_SECONDS = 30.0
_DUE = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)
# Rows of a superseded report that are stopped: everything not delivered and not already failed.
_STOPPABLE = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING, DeliveryStatus.HELD)

StoreSender = Callable[..., list[StoreOutcome]]  # exporters.dicom_sender.send_datasets
Hl7Sender = Callable[..., AckOutcome]  # exporters.mllp.send_hl7


@dataclass
class OutboxTick:
    """What one tick did; the counts are of outcomes recorded."""

    delivered: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # stopped for an operator (identity no longer agrees)
    # claimed, then stopped before their send (their draft was superseded meanwhile): not sent
    stopped: list[int] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return len(self.delivered) + len(self.retrying) + len(self.failed) + len(self.held)

    @property
    def settled(self) -> set[int]:
        return {*self.delivered, *self.retrying, *self.failed, *self.held, *self.stopped}


@dataclass(frozen=True)
class _Work:
    """A claimed row and what its message is built from, read in one go (no session held open)."""

    delivery_id: int
    kind: DeliveryKind
    target: str
    message_id: str
    attempts: int
    report_id: int
    findings: str
    impression: str
    drafted_at: datetime
    model: ModelIdentity
    created_at: datetime  # the row's: the retry horizon counts from here
    identity: dict[str, Any] | None  # frozen at inference: what the messages are built from
    source_path: str | None  # the spool file, read only to check it still agrees
    identity_conflict: str | None  # the study's instances disagree on the patient: never sent
    corrects: PreviousSR | None = None  # an SR's predecessor: the superseded report's SR
    result_status: str = "P"  # an ORU's OBR-25 / OBX-11: C when it corrects an earlier draft's ORU


@dataclass(frozen=True)
class _Result:
    status: SendStatus
    error: str | None = None
    ack_code: str | None = None
    ack_text: str | None = None
    repairs: tuple[str, ...] = ()  # header values the builder repaired or dropped: kept in the row's note


class _NotBuilt(Exception):
    """The message could not be built; `result` says whether that is permanent."""

    def __init__(self, result: _Result) -> None:
        super().__init__(result.error)
        self.result = result


class _Held(Exception):
    """The message must not go out until an operator looks; the text says why (no identifiers)."""


class Outbox:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        jitter: Callable[[], float] = random.random,
        store: StoreSender = send_datasets,
        send_oru: Hl7Sender = send_hl7,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.jitter = jitter
        self.store = store
        self.send_oru = send_oru
        self.batch_size = batch_size
        self.lease = timedelta(
            seconds=settings.delivery_timeout_seconds * (batch_size + 2) + LEASE_MARGIN_SECONDS
        )
        self._dicom_tls: ssl.SSLContext | None = dicom_client_tls(settings)
        self._mllp_tls: ssl.SSLContext | None = mllp_client_tls(settings)

    # ---- one tick ---------------------------------------------------------------------------------

    def run_due(self, report_id: int | None = None) -> OutboxTick:
        """Send what is due (only `report_id`'s rows when given); returns the outcomes recorded."""
        tick = OutboxTick()
        claimed = self._claim(report_id)
        if not claimed:
            return tick
        work = self._load(claimed)
        released: set[int] = set()  # ORUs handed back unsent this tick (their RIS did not answer)
        try:
            srs = sorted(
                (item for item in work if item.kind is DeliveryKind.SR), key=lambda item: item.target
            )
            for target, items in groupby(srs, key=lambda item: item.target):
                self._send_srs(target, list(items), tick)
            for item in (item for item in work if item.kind is DeliveryKind.ORU):
                if item.delivery_id not in released:
                    self._send_oru(item, work, released, tick)
        finally:
            # Whatever stopped this tick (a bug, the database gone), rows it did not settle are due
            # again at once instead of waiting out their lease.
            unsettled = [item for item in work if item.delivery_id not in tick.settled | released]
            if unsettled:
                with contextlib.suppress(Exception):
                    self._release(unsettled, None)
        return tick

    def _claim(self, report_id: int | None) -> list[int]:
        now = self.clock()
        due = or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now)
        query = (
            select(Delivery.id)
            .where(Delivery.status.in_(_DUE), due)
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(self.batch_size)
        )
        if report_id is not None:
            query = query.where(Delivery.report_id == report_id)
        claimed = []
        with self.sessions.begin() as session:
            for delivery_id in session.scalars(query).all():
                taken = session.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery_id, Delivery.status.in_(_DUE), due)
                    .values(next_attempt_at=now + self.lease, attempts=Delivery.attempts + 1, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                if taken.rowcount == 1:
                    claimed.append(delivery_id)
        return claimed

    def _load(self, claimed: list[int]) -> list[_Work]:
        with self.sessions() as session:
            rows = session.execute(
                select(Delivery, Report, ModelVersion, Instance.path, Study)
                .join(Report, Delivery.report_id == Report.id)
                .join(ModelVersion, Report.model_version_id == ModelVersion.id)
                .join(Study, Report.study_id == Study.id)
                .outerjoin(Instance, Report.instance_id == Instance.id)
                .where(Delivery.id.in_(claimed))
                .order_by(Delivery.id)
            ).all()
            previous = _superseded_rows(session, {report.supersedes_id for _, report, *_ in rows})
            work = []
            for delivery, report, model, path, study in rows:
                before, study_uid = previous.get(report.supersedes_id, ({}, None))
                study_uid = study_uid or study.study_instance_uid
                work.append(
                    _Work(
                        delivery_id=delivery.id,
                        kind=delivery.kind,
                        target=delivery.target,
                        message_id=delivery.message_id,
                        attempts=delivery.attempts,
                        report_id=report.id,
                        findings=report.findings,
                        impression=report.impression,
                        drafted_at=report.created_at,
                        model=model_identity(model),
                        created_at=delivery.created_at,
                        identity=report.identity,
                        source_path=path,
                        identity_conflict=study.identity_conflict,
                        corrects=previous_sr(before.get(DeliveryKind.SR), study_uid),
                        result_status=result_status(before.get(DeliveryKind.ORU)),
                    )
                )
            return work

    # ---- sending ----------------------------------------------------------------------------------

    def _send_srs(self, target: str, items: list[_Work], tick: OutboxTick) -> None:
        try:
            peer: DicomPeer = parse_dicom_peer(target)
        except ValueError as error:
            for item in items:
                self._record(item, _Result(SendStatus.FAILED, f"bad PACS target: {error}"), tick)
            return
        ready: list[tuple[_Work, Dataset]] = []
        repairs: dict[int, tuple[str, ...]] = {}
        for item in items:
            try:
                source = _source(item)
                repairs[item.delivery_id] = tuple(header_repairs(DeliveryKind.SR, source))
                sr = report_sr(
                    source, item.findings, item.impression, item.model, item.message_id, item.corrects
                )
                ready.append((item, sr))
            except _Held as held:
                self._hold(item, str(held), tick)
            except _NotBuilt as problem:
                self._record(item, problem.result, tick)
            except Exception as error:  # any builder failure fails this SR only; the batch goes on
                self._record(item, _Result(SendStatus.FAILED, _not_built("SR", error)), tick)
        ready = self._not_stopped(ready, tick)
        if not ready:
            return
        try:
            outcomes = self.store(
                [dataset for _, dataset in ready],
                peer,
                calling_ae=self.settings.ae_title,
                timeout=self.settings.delivery_timeout_seconds,
                tls=self._dicom_tls,
            )
        except Exception as error:  # the sender itself broke: try these again later
            for item, _ in ready:
                self._record(item, _Result(SendStatus.RETRY, f"C-STORE failed: {one_line(error)}"), tick)
            return
        for (item, _), outcome in zip(ready, outcomes, strict=True):
            code = f"{outcome.status_code:04X}" if outcome.status_code is not None else None
            text = outcome.warning or (outcome.error if outcome.status_code is not None else None)
            result = _Result(outcome.status, outcome.error, code, text, repairs.get(item.delivery_id, ()))
            self._record(item, result, tick)

    def _send_oru(self, item: _Work, batch: Sequence[_Work], released: set[int], tick: OutboxTick) -> None:
        try:
            peer: MllpPeer = parse_mllp_peer(item.target)
        except ValueError as error:
            self._record(item, _Result(SendStatus.FAILED, f"bad RIS target: {error}"), tick)
            return
        try:
            source = _source(item)
            repaired = tuple(header_repairs(DeliveryKind.ORU, source))
            message = report_oru(
                source,
                item.findings,
                item.impression,
                item.model,
                item.message_id,
                item.drafted_at,
                self.settings,
                item.result_status,
            )
        except _Held as held:
            self._hold(item, str(held), tick)
            return
        except _NotBuilt as problem:
            self._record(item, problem.result, tick)
            return
        except Exception as error:  # any builder failure (hl7apy's included) fails this ORU only
            self._record(item, _Result(SendStatus.FAILED, _not_built("ORU", error)), tick)
            return
        if not self._not_stopped([(item, message)], tick):
            return
        try:
            outcome = self.send_oru(
                message,
                peer.host,
                peer.port,
                control_id=item.message_id,
                timeout=self.settings.delivery_timeout_seconds,
                tls_context=self._mllp_tls,
            )
        except Exception as error:  # the sender itself broke: try again later
            self._record(item, _Result(SendStatus.RETRY, f"MLLP send failed: {one_line(error)}"), tick)
            return
        result = _Result(outcome.status, outcome.error, outcome.ack_code, outcome.ack_text, repaired)
        next_at = self._record(item, result, tick)
        if outcome.retryable and outcome.ack_code is None:  # no answer at all: the RIS is unreachable
            later = [
                other
                for other in batch
                if other.kind is DeliveryKind.ORU
                and other.target == item.target
                and other.delivery_id > item.delivery_id
                and other.delivery_id not in released
            ]
            self._release(later, next_at)
            released.update(other.delivery_id for other in later)

    def _not_stopped(self, ready: list[tuple[_Work, Any]], tick: OutboxTick) -> list[tuple[_Work, Any]]:
        """`ready` without the rows stopped since they were claimed (`stop_superseded`: a corrected draft
        was written meanwhile); those are not sent, and the attempt their claim counted is taken back."""
        if not ready:
            return ready
        ids = [item.delivery_id for item, _ in ready]
        with self.sessions.begin() as session:
            stopped = set(
                session.scalars(select(Delivery.id).where(Delivery.id.in_(ids), Delivery.status.not_in(_DUE)))
            )
            if stopped:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(stopped))
                    .values(attempts=Delivery.attempts - 1)
                    .execution_options(synchronize_session=False)
                )
        for delivery_id in sorted(stopped):
            tick.stopped.append(delivery_id)
            log.info(
                "delivery %d not sent: stopped since it was claimed (its draft was superseded)", delivery_id
            )
        return [(item, built) for item, built in ready if item.delivery_id not in stopped]

    def _release(self, items: list[_Work], until: datetime | None) -> None:
        """Hand back claimed rows unsent (their attempt not counted), due again at `until`."""
        if not items:
            return
        with self.sessions.begin() as session:
            for item in items:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id == item.delivery_id)
                    .values(next_attempt_at=until or self.clock(), attempts=Delivery.attempts - 1)
                    .execution_options(synchronize_session=False)
                )

    # ---- recording --------------------------------------------------------------------------------

    def _record(self, item: _Work, result: _Result, tick: OutboxTick) -> datetime | None:
        now = self.clock()
        decision = decide(
            result.status,
            result.error,
            attempts=item.attempts,
            max_attempts=self.settings.delivery_max_attempts,
            first_queued_at=item.created_at,
            horizon=timedelta(hours=self.settings.delivery_horizon_hours),
            now=now,
            base_seconds=self.settings.delivery_backoff_seconds,
            jitter=self.jitter(),
        )
        with self.sessions.begin() as session:
            row = session.get_one(Delivery, item.delivery_id)
            superseded_by = _superseding_report(session, item.report_id)
            if superseded_by is not None and decision.status is not DeliveryStatus.DELIVERED:
                # Stopped while this attempt was under way (`stop_superseded`): it stays stopped.
                decision = replace(decision, status=DeliveryStatus.FAILED, next_attempt_at=None)
                decision = replace(decision, error=_superseded_note(superseded_by, decision.error))
            row.status = decision.status
            row.next_attempt_at = decision.next_attempt_at
            row.last_error = decision.error
            row.ack_code = result.ack_code
            row.ack_text = _note(result)
            row.updated_at = now
            session.flush()
            if superseded_by is None:  # a superseded draft no longer decides its study's state
                settle_study(session, item.report_id)
            if decision.status is DeliveryStatus.DELIVERED:
                _wake_waiting(session, item, now)
        {
            DeliveryStatus.DELIVERED: tick.delivered,
            DeliveryStatus.RETRYING: tick.retrying,
            DeliveryStatus.FAILED: tick.failed,
        }[decision.status].append(item.delivery_id)
        wait = (
            f" (next try in {(decision.next_attempt_at - now).total_seconds():.1f} s)"
            if decision.next_attempt_at
            else ""
        )
        log.log(
            logging.INFO if decision.status is DeliveryStatus.DELIVERED else logging.WARNING,
            "delivery %d (%s to %s, report %d, attempt %d): %s%s%s",
            item.delivery_id,
            item.kind,
            item.target,
            item.report_id,
            item.attempts,
            decision.status,
            f": {decision.error}" if decision.error else "",
            wait,
        )
        return decision.next_attempt_at

    def _hold(self, item: _Work, reason: str, tick: OutboxTick) -> None:
        """Stop the row for an operator (`echo-admin study` shows it; `echo-admin resend` releases it)."""
        now = self.clock()
        with self.sessions.begin() as session:
            row = session.get_one(Delivery, item.delivery_id)
            if _superseding_report(session, item.report_id) is not None and row.status not in _DUE:
                tick.stopped.append(item.delivery_id)  # stopped meanwhile for good: nothing to hold
                return
            row.status = DeliveryStatus.HELD
            row.next_attempt_at = None
            row.last_error = reason
            row.updated_at = now
        tick.held.append(item.delivery_id)
        log.error("delivery %d (%s, report %d) held: %s", item.delivery_id, item.kind, item.report_id, reason)


def stop_superseded(session: Session, superseded_id: int, by: Report, now: datetime) -> list[int]:
    """End the superseded report's rows that have not gone out, in the caller's transaction (the one
    that writes the superseding report `by` and its rows); returns their ids."""
    stopped = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.report_id == superseded_id, Delivery.status.in_(_STOPPABLE))
            .order_by(Delivery.id)
        )
    )
    for row in stopped:
        row.status = DeliveryStatus.FAILED
        row.next_attempt_at = None
        row.last_error = _superseded_note(by.id, None, by.revision)
        row.updated_at = now
    session.flush()
    for row in stopped:
        log.info(
            "delivery %d (%s, report %d) stopped: superseded by report %d",
            row.id,
            row.kind,
            superseded_id,
            by.id,
        )
    return [row.id for row in stopped]


def _superseding_report(session: Session, report_id: int) -> int | None:
    """The report that supersedes `report_id`, if one does."""
    return session.scalar(select(Report.id).where(Report.supersedes_id == report_id).limit(1))


def _superseded_note(by_report_id: int, error: str | None, revision: int | None = None) -> str:
    which = f"report {by_report_id}" + (f" (revision {revision})" if revision is not None else "")
    note = f"superseded by {which}, the draft read from the frontal view: not sent"
    return f"{note} (this attempt: {error})" if error else note


def _superseded_rows(
    session: Session, report_ids: set[int | None]
) -> dict[int, tuple[dict[DeliveryKind, Delivery], str | None]]:
    """For each superseded report among `report_ids`: its delivery rows by kind, and the Study Instance
    UID its messages were built with (from its frozen identity)."""
    wanted = {report_id for report_id in report_ids if report_id is not None}
    if not wanted:
        return {}
    found: dict[int, tuple[dict[DeliveryKind, Delivery], str | None]] = {}
    for report in session.scalars(select(Report).where(Report.id.in_(wanted))):
        rows = session.scalars(select(Delivery).where(Delivery.report_id == report.id))
        key = (report.identity or {}).get("key") or {}
        found[report.id] = ({row.kind: row for row in rows}, key.get("StudyInstanceUID") or None)
    return found


def _wake_waiting(session: Session, item: _Work, now: datetime) -> None:
    """The destination answered again: its other retrying rows need not wait out their backoff."""
    session.execute(
        update(Delivery)
        .where(
            Delivery.target == item.target,
            Delivery.kind == item.kind,
            Delivery.status == DeliveryStatus.RETRYING,
            Delivery.next_attempt_at > now,
        )
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )


def _note(result: _Result) -> str | None:
    """The peer's answer text, then what the builder repaired in the header (so an operator sees it)."""
    parts = [result.ack_text] if result.ack_text else []
    if result.repairs:
        parts.append("header repaired: " + "; ".join(result.repairs))
    return "; ".join(parts) or None


def _not_built(what: str, error: Exception) -> str:
    """A builder's refusal (ValueError/TypeError: its own clear words) or any other error, in one line."""
    text = str(error) if isinstance(error, ValueError | TypeError) and str(error) else one_line(error)
    return f"cannot build the {what}: {text}"


def _source(item: _Work) -> Dataset:
    """The header the messages are built from: the frozen identity, checked against the spool's copy."""
    if item.identity_conflict:
        raise _Held(f"{item.identity_conflict}; held for an operator")
    try:
        header = thawed_header(item.identity)
    except IdentityError as error:
        raise _Held(f"{error}; check the study, then resend it") from None
    if item.source_path is None:
        return header  # the image row is gone (purged): the frozen copy is all there is, and enough
    try:
        current = dcmread(item.source_path, stop_before_pixels=True)
    except FileNotFoundError:
        return header  # removed from the spool (retention): nothing can disagree
    except InvalidDicomError:
        raise _Held("the spool's copy of the source image is no longer DICOM; held for an operator") from None
    except OSError as error:  # a mount or disk problem: the file may be readable later
        raise _NotBuilt(
            _Result(SendStatus.RETRY, f"cannot read the report's source image: {error.strerror or error}")
        ) from None
    disagreement = compare_with_spool(item.identity or {}, current)
    if disagreement is not None:
        raise _Held(str(disagreement))
    return header
