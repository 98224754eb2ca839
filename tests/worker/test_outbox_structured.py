"""The IHE AI Results SR (TID 1500) beside the narrative SR: one PACS association carries both, the
study waits for both, and a corrected draft's AI Results SR names the one it replaces."""

from __future__ import annotations

import highdicom as hd
from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage

from exporters.outcome import SendStatus
from exporters.readings import draft_readings
from node.delivery.messages import destinations, sr_series_uid
from node.store.database import Database
from node.store.states import DeliveryKind, DeliveryStatus, StudyState
from tests.worker.test_outbox import PACS, RIS, RecordingRis, RecordingStore, deliveries, outbox, study_state
from tests.worker.test_redraft import Site, drafted_from_a_lateral

BOTH = "2000,1500"


def test_each_template_named_gets_its_row(node_settings) -> None:
    assert destinations(node_settings(pacs=PACS, ris=RIS, sr_templates=BOTH)) == {
        DeliveryKind.SR: PACS,
        DeliveryKind.AIR: PACS,
        DeliveryKind.ORU: RIS,
    }
    assert destinations(node_settings(pacs=PACS, sr_templates="1500")) == {DeliveryKind.AIR: PACS}
    assert destinations(node_settings(sr_templates=BOTH)) == {}  # no PACS: no SR of either kind


def test_both_srs_go_in_one_association_and_the_study_is_delivered_when_both_are(
    database: Database, node_settings, store_study, images, report_for, clock, engine
) -> None:
    engine.findings = "The heart is enlarged. Small left pleural effusion. No pneumothorax."
    engine.impression = "Cardiomegaly with a small left effusion."
    settings = node_settings(pacs=PACS, ris=RIS, sr_templates=BOTH)
    image = images.chest()
    study_id = store_study(image)
    report_id = report_for(study_id, settings)
    store = RecordingStore()

    tick = outbox(database, settings, clock, store, RecordingRis()).run_due()

    rows = deliveries(database)
    air, sr = rows[(report_id, DeliveryKind.AIR)], rows[(report_id, DeliveryKind.SR)]
    assert sorted(tick.delivered) == sorted(row.id for row in rows.values())
    [(datasets, target)] = store.calls
    assert target == PACS
    by_class = {dataset.SOPClassUID: dataset for dataset in datasets}
    assert set(by_class) == {ComprehensiveSRStorage, Comprehensive3DSRStorage}
    air_sr = by_class[Comprehensive3DSRStorage]
    assert air_sr.SOPInstanceUID == air.message_id and air_sr.SeriesInstanceUID == sr_series_uid(
        air.message_id
    )
    assert by_class[ComprehensiveSRStorage].SOPInstanceUID == sr.message_id
    assert air_sr.SeriesInstanceUID != by_class[ComprehensiveSRStorage].SeriesInstanceUID
    assert (air_sr.PatientID, air_sr.StudyInstanceUID) == (image.PatientID, image.StudyInstanceUID)
    assert (air_sr.VerificationFlag, air_sr.PreliminaryFlag) == ("UNVERIFIED", "PRELIMINARY")
    hd.sr.Comprehensive3DSR.from_dataset(air_sr)  # highdicom's reader takes it
    presence = {
        item.ConceptNameCodeSequence[0].CodeMeaning: item.ConceptCodeSequence[0].CodeMeaning
        for item in _walk(air_sr.ContentSequence)
        if item.ValueType == "CODE" and item.ConceptCodeSequence[0].CodeMeaning in ("Present", "Absent")
    }
    readings = draft_readings(engine.findings, engine.impression)
    assert [r.label for r in readings] == ["positive", "positive", "negative"]
    assert len(presence) == 3 and sorted(presence.values()) == ["Absent", "Present", "Present"]
    assert presence["Pneumothorax"] == "Absent" and presence["Pleural effusion"] == "Present"
    assert study_state(database, study_id)[0] is StudyState.DELIVERED


def test_the_study_is_not_delivered_while_the_ai_results_sr_is_not(
    database: Database, node_settings, store_study, images, report_for, clock
) -> None:
    settings = node_settings(pacs=PACS, ris=RIS, sr_templates=BOTH)
    study_id = store_study(images.chest())
    report_id = report_for(study_id, settings)
    with database.sessions.begin() as session:  # the narrative SR and the ORU are out; the AIR SR is not
        for row in deliveries(database).values():
            if row.kind is not DeliveryKind.AIR:
                session.merge(row).status = DeliveryStatus.DELIVERED
    store = RecordingStore([SendStatus.FAILED])

    outbox(database, settings, clock, store, RecordingRis()).run_due()

    assert deliveries(database)[(report_id, DeliveryKind.AIR)].status is DeliveryStatus.FAILED
    state, reason = study_state(database, study_id)
    assert state is StudyState.FAILED and reason is not None and f"AIR to {PACS} failed" in reason


def test_a_corrected_draft_s_ai_results_sr_names_the_one_it_replaces(
    database: Database, node_settings, store_study, engine, clock, images
) -> None:
    settings = node_settings(
        pacs=PACS, ris=RIS, sr_templates=BOTH, draft_lateral_only=True, delivery_backoff_seconds=2.0
    )
    site = Site(database, settings, store_study, engine, clock)
    study_id, lateral, first = drafted_from_a_lateral(site, images, delivered=False)
    assert len(site.deliver().delivered) == 3
    old_air = site.deliveries(first.id)[DeliveryKind.AIR].message_id
    pa = images.chest(study_uid=lateral.StudyInstanceUID, view_position="PA", instance_number=2)
    site.receive(pa)
    site.assemble()
    second = site.infer(study_id).report_id

    site.deliver()

    [corrected] = [d for d in site.store.calls[1][0] if d.SOPClassUID == Comprehensive3DSRStorage]
    assert corrected.SOPInstanceUID == site.deliveries(second)[DeliveryKind.AIR].message_id != old_air
    (study,) = corrected.PredecessorDocumentsSequence
    (previous,) = study.ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert (previous.ReferencedSOPInstanceUID, previous.ReferencedSOPClassUID) == (
        old_air,
        Comprehensive3DSRStorage,
    )
    first_air = [d for d in site.store.calls[0][0] if d.SOPClassUID == Comprehensive3DSRStorage]
    assert [d.SOPInstanceUID for d in first_air] == [old_air]
    assert "PredecessorDocumentsSequence" not in first_air[0]


def _walk(items):
    for item in items:
        yield item
        yield from _walk(getattr(item, "ContentSequence", []))
