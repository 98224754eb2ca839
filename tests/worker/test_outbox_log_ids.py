"""The outbox's log records name the report and the delivery they are about (`study_context`), so a
JSON log line of a send carries report_id and delivery_id, whoever logs it (the HL7 sender too)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from exporters.outcome import AckOutcome, SendStatus, StoreOutcome
from node.config.logs import StudyIds
from node.delivery.outbox import Outbox
from node.store.models import Delivery
from node.store.states import DeliveryKind

sender_log = logging.getLogger("echo.test.sender")


def store(datasets, peer, *, calling_ae, timeout, tls):
    return [
        StoreOutcome(SendStatus.DELIVERED, sop_instance_uid=d.SOPInstanceUID, status_code=0) for d in datasets
    ]


def busy_ris(message, host, port, *, control_id, timeout, tls_context):
    sender_log.info("sending an ORU")
    return AckOutcome(status=SendStatus.RETRY, error="receiver error (AE): busy", ack_code="AE")


def test_each_delivery_is_logged_with_its_report_and_delivery_ids(
    database, node_settings, store_study, images, report_for, clock, caplog: pytest.LogCaptureFixture
) -> None:
    settings = node_settings(pacs="PACS@127.0.0.1:11113", ris="127.0.0.1:2575")
    report_id = report_for(store_study(images.chest()), settings)
    caplog.handler.addFilter(StudyIds())  # as the handler configure_logging installs has
    caplog.set_level(logging.INFO)
    clock.catch_up()
    Outbox(database.sessions, settings, clock=clock.now, store=store, send_oru=busy_ris).run_due()

    with database.sessions() as session:
        ids = {row.kind: row.id for row in session.scalars(select(Delivery))}
    about = {
        (record.name, getattr(record, "delivery_id", None), getattr(record, "report_id", None))
        for record in caplog.records
        if record.name in ("node.delivery.outbox", sender_log.name)
    }
    assert ("node.delivery.outbox", ids[DeliveryKind.SR], report_id) in about
    assert ("node.delivery.outbox", ids[DeliveryKind.ORU], report_id) in about
    assert (sender_log.name, ids[DeliveryKind.ORU], report_id) in about
