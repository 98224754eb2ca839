"""The outbox: delivery rows (written with their report) sent to the PACS and the RIS until done.

One tick (`Outbox.run_due`):

1. claim the due rows (pending or retrying, next_attempt_at <= now) with one conditional UPDATE
   each, which pushes next_attempt_at a lease ahead and counts the attempt: two runners (the node's
   loop and an "io" worker) never send the same row at once, and a runner that dies mid-send
   leaves a row that comes due again when its lease ends;
2. send: the SRs for one PACS (narrative and AI Results) in one association, each ORU on its own
   MLLP connection (after a connection-level failure the rest of that RIS's ORUs wait for the next
   tick instead of each waiting out the timeout), each FHIR DiagnosticReport in one transaction
   (or a file in a folder);
3. record each outcome (`node.delivery.policy.decide`) and, in the same transaction, settle the
   study: inferred -> delivered when every row of its report is delivered, -> failed when one
   failed for good.

A PACS or RIS that is down loses nothing: its rows stay retrying with growing waits and go out
when it is back (an operator can bring failed ones back with `echo-admin resend`).

A draft superseded by its correction never goes out after it (`node.delivery.supersede`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from sqlalchemy.orm import Session, sessionmaker

from echo.errors import one_line
from exporters.dicom_sender import send_datasets
from exporters.mllp import send_hl7
from exporters.outcome import AckOutcome, SendStatus, StoreOutcome
from node.config.logs import study_context
from node.config.settings import DicomPeer, MllpPeer, Settings, parse_dicom_peer, parse_mllp_peer
from node.delivery.claims import DUE, claim_due, release, take_back_stopped
from node.delivery.client_tls import dicom_client_tls, fhir_token, mllp_client_tls
from node.delivery.messages import header_repairs, is_sr, report_fhir, report_oru, report_pacs_sr
from node.delivery.policy import decide
from node.delivery.settle import settle_study, wake_waiting
from node.delivery.supersede import superseded_note, superseding_report
from node.delivery.work import (
    Held,
    NotBuilt,
    OutboxTick,
    SendResult,
    Work,
    load_work,
    not_built,
    row_note,
    source_header,
)
from node.store.models import Delivery, utcnow
from node.store.states import DeliveryKind, DeliveryStatus

if TYPE_CHECKING:
    from exporters.fhir_client import FhirOutcome

log = logging.getLogger(__name__)

DEFAULT_BATCH = 20
LEASE_MARGIN_SECONDS = 30.0

StoreSender = Callable[..., list[StoreOutcome]]  # exporters.dicom_sender.send_datasets
Hl7Sender = Callable[..., AckOutcome]  # exporters.mllp.send_hl7
FhirSender = Callable[..., "FhirOutcome"]  # exporters.fhir_client.send_fhir
FhirWriter = Callable[[Any, Path], "FhirOutcome"]  # exporters.fhir_client.write_fhir


# fhir.resources and httpx load with the first FHIR delivery: a node without ECHO_FHIR never needs them
# (about 16 MB of a process).
def send_fhir(*args: Any, **kwargs: Any) -> FhirOutcome:
    from exporters.fhir_client import send_fhir as send

    return send(*args, **kwargs)


def write_fhir(bundle: Any, folder: Path) -> FhirOutcome:
    from exporters.fhir_client import write_fhir as write

    return write(bundle, folder)


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
        send_fhir: FhirSender = send_fhir,
        write_fhir: FhirWriter = write_fhir,
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
        self.send_fhir = send_fhir
        self.write_fhir = write_fhir
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
        # When each send began: an operator's timeline, and benchmarks/e2e.py's "delivery wait".
        log.info("claimed deliveries %s", ", ".join(map(str, claimed)))
        work = self._load(claimed)
        released: set[int] = set()  # ORUs handed back unsent this tick (their RIS did not answer)
        try:
            srs = sorted((item for item in work if is_sr(item.kind)), key=lambda item: item.target)
            for target, items in groupby(srs, key=lambda item: item.target):
                self._send_srs(target, list(items), tick)
            for item in (item for item in work if item.kind is DeliveryKind.FHIR):
                with study_context(report_id=item.report_id, delivery_id=item.delivery_id):
                    self._send_fhir(item, tick)
            for item in (item for item in work if item.kind is DeliveryKind.ORU):
                if item.delivery_id not in released:
                    with study_context(report_id=item.report_id, delivery_id=item.delivery_id):
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
        with self.sessions.begin() as session:
            return claim_due(session, self.clock(), self.lease, self.batch_size, report_id)

    def _load(self, claimed: list[int]) -> list[Work]:
        with self.sessions() as session:
            return load_work(session, claimed)

    # ---- sending ----------------------------------------------------------------------------------

    def _built(
        self, item: Work, what: str, build: Callable[[Dataset], Any], tick: OutboxTick
    ) -> tuple[Any, tuple[str, ...]] | None:
        """`item`'s message built from its checked header, with the header repairs the builder makes;
        None when it is held for an operator or cannot be built (recorded: this row only)."""
        try:
            source = source_header(item)
            return build(source), tuple(header_repairs(item.kind, source))
        except Held as held:
            self._hold(item, str(held), tick)
        except NotBuilt as problem:
            self._record(item, problem.result, tick)
        except (
            Exception
        ) as error:  # any builder failure (highdicom's, hl7apy's, fhir.resources') fails this one
            self._record(item, SendResult(SendStatus.FAILED, not_built(what, error)), tick)
        return None

    def _send_srs(self, target: str, items: list[Work], tick: OutboxTick) -> None:
        try:
            peer: DicomPeer = parse_dicom_peer(target)
        except ValueError as error:
            for item in items:
                self._record(item, SendResult(SendStatus.FAILED, f"bad PACS target: {error}"), tick)
            return
        ready: list[tuple[Work, Dataset]] = []
        repairs: dict[int, tuple[str, ...]] = {}
        for item in items:
            texts = (item.findings, item.impression)
            built = self._built(
                item,
                "SR",
                lambda source, item=item, texts=texts: report_pacs_sr(
                    item.kind, source, texts, item.model, item.message_id, item.corrects
                ),
                tick,
            )
            if built is not None:
                ready.append((item, built[0]))
                repairs[item.delivery_id] = built[1]
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
                self._record(item, SendResult(SendStatus.RETRY, f"C-STORE failed: {one_line(error)}"), tick)
            return
        for (item, _), outcome in zip(ready, outcomes, strict=True):
            code = f"{outcome.status_code:04X}" if outcome.status_code is not None else None
            text = outcome.warning or (outcome.error if outcome.status_code is not None else None)
            result = SendResult(outcome.status, outcome.error, code, text, repairs.get(item.delivery_id, ()))
            self._record(item, result, tick)

    def _send_oru(self, item: Work, batch: Sequence[Work], released: set[int], tick: OutboxTick) -> None:
        try:
            peer: MllpPeer = parse_mllp_peer(item.target)
        except ValueError as error:
            self._record(item, SendResult(SendStatus.FAILED, f"bad RIS target: {error}"), tick)
            return
        built = self._built(
            item,
            "ORU",
            lambda source: report_oru(
                source,
                item.findings,
                item.impression,
                item.model,
                item.message_id,
                item.drafted_at,
                self.settings,
                item.result_status,
            ),
            tick,
        )
        if built is None or not self._not_stopped([(item, built[0])], tick):
            return
        message, repaired = built
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
            self._record(item, SendResult(SendStatus.RETRY, f"MLLP send failed: {one_line(error)}"), tick)
            return
        result = SendResult(outcome.status, outcome.error, outcome.ack_code, outcome.ack_text, repaired)
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

    def _send_fhir(self, item: Work, tick: OutboxTick) -> None:
        """The DiagnosticReport to the FHIR server (one transaction) or into the folder ECHO_FHIR names."""
        built = self._built(
            item,
            "FHIR DiagnosticReport",
            lambda source: report_fhir(source, item.findings, item.impression, item.model, item.drafted_at),
            tick,
        )
        if built is None or not self._not_stopped([(item, built[0])], tick):
            return
        bundle, repaired = built
        try:
            if "://" not in item.target:  # a folder (an interface engine's pick-up, a test)
                outcome = self.write_fhir(bundle, Path(item.target))
            else:
                outcome = self.send_fhir(
                    bundle,
                    item.target,
                    token=fhir_token(self.settings),
                    ca_file=self.settings.fhir_ca,
                    timeout=self.settings.delivery_timeout_seconds,
                )
        except Exception as error:  # the sender itself broke (the token file unreadable...): try again later
            self._record(item, SendResult(SendStatus.RETRY, f"FHIR send failed: {one_line(error)}"), tick)
            return
        code = str(outcome.http_status) if outcome.http_status is not None else None
        self._record(item, SendResult(outcome.status, outcome.error, code, None, repaired), tick)

    def _not_stopped(self, ready: list[tuple[Work, Any]], tick: OutboxTick) -> list[tuple[Work, Any]]:
        """`ready` without the rows stopped since they were claimed (`stop_superseded`: a corrected draft
        was written meanwhile); those are not sent, and the attempt their claim counted is taken back."""
        if not ready:
            return ready
        with self.sessions.begin() as session:
            stopped = take_back_stopped(session, [item.delivery_id for item, _ in ready])
        for delivery_id in sorted(stopped):
            tick.stopped.append(delivery_id)
            log.info(
                "delivery %d not sent: stopped since it was claimed (its draft was superseded)", delivery_id
            )
        return [(item, built) for item, built in ready if item.delivery_id not in stopped]

    def _release(self, items: list[Work], until: datetime | None) -> None:
        """Hand back claimed rows unsent (their attempt not counted), due again at `until`."""
        if items:
            with self.sessions.begin() as session:
                release(session, [item.delivery_id for item in items], until or self.clock())

    # ---- recording --------------------------------------------------------------------------------

    def _record(self, item: Work, result: SendResult, tick: OutboxTick) -> datetime | None:
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
            superseded_by = superseding_report(session, item.report_id)
            if superseded_by is not None and decision.status is not DeliveryStatus.DELIVERED:
                # Stopped while this attempt was under way (`stop_superseded`): it stays stopped.
                decision = replace(decision, status=DeliveryStatus.FAILED, next_attempt_at=None)
                decision = replace(decision, error=superseded_note(superseded_by, decision.error))
            row.status = decision.status
            row.next_attempt_at = decision.next_attempt_at
            row.last_error = decision.error
            row.ack_code = result.ack_code
            row.ack_text = row_note(result)
            row.updated_at = now
            session.flush()
            if superseded_by is None:  # a superseded draft no longer decides its study's state
                settle_study(session, item.report_id)
            if decision.status is DeliveryStatus.DELIVERED:
                wake_waiting(session, item.target, item.kind, now)
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
        with study_context(report_id=item.report_id, delivery_id=item.delivery_id):
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

    def _hold(self, item: Work, reason: str, tick: OutboxTick) -> None:
        """Stop the row for an operator (`echo-admin study` shows it; `echo-admin resend` releases it)."""
        now = self.clock()
        with self.sessions.begin() as session:
            row = session.get_one(Delivery, item.delivery_id)
            if superseding_report(session, item.report_id) is not None and row.status not in DUE:
                tick.stopped.append(item.delivery_id)  # stopped meanwhile for good: nothing to hold
                return
            row.status = DeliveryStatus.HELD
            row.next_attempt_at = None
            row.last_error = reason
            row.updated_at = now
        tick.held.append(item.delivery_id)
        with study_context(report_id=item.report_id, delivery_id=item.delivery_id):
            log.error(
                "delivery %d (%s, report %d) held: %s", item.delivery_id, item.kind, item.report_id, reason
            )
