"""send_datasets against real peers on loopback: a pynetdicom SCP, a silent listener, a closed port."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest
from pydicom import Dataset

from exporters.dicom_sender import StorePeer, send_datasets
from exporters.identity import ModelIdentity
from exporters.outcome import SendStatus
from exporters.sr import build_sr
from exporters.store_status import classify_store_status

MakeImage = Callable[..., Dataset]
A_ABORT_PDU = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0])  # PS3.8 9.3.8: source 0 (service user)


@pytest.fixture
def report(image: Dataset, model: ModelIdentity) -> Dataset:
    return build_sr([image], "Heart size is normal.", "No acute disease.", model)


def peer_of(fake: Any) -> StorePeer:
    return StorePeer(ae_title="PACS", host=fake.host, port=fake.port)


def test_success_is_delivered_and_the_pacs_holds_the_sr(pacs, report: Dataset) -> None:
    (outcome,) = send_datasets([report], peer_of(pacs), calling_ae="ECHO", timeout=5)

    assert outcome.status is SendStatus.DELIVERED and outcome.delivered
    assert (outcome.status_code, outcome.warning, outcome.error) == (0x0000, None, None)
    assert outcome.sop_instance_uid == report.SOPInstanceUID
    (stored,) = pacs.received
    assert stored.SOPInstanceUID == report.SOPInstanceUID
    (findings,) = [
        item for item in stored.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121070"
    ]
    assert findings.ContentSequence[0].TextValue == "Heart size is normal."


def test_one_association_carries_the_whole_batch_with_one_outcome_per_status(
    pacs, report: Dataset, make_image: MakeImage
) -> None:
    pacs.statuses = [0x0000, 0xB000, 0xA700, 0xA900, 0xC000]
    batch = [report, *(make_image() for _ in range(4))]  # an SR and DX images: two SOP classes

    outcomes = send_datasets(batch, peer_of(pacs), calling_ae="ECHO", timeout=5)

    assert pacs.associations == 1
    assert [outcome.sop_instance_uid for outcome in outcomes] == [item.SOPInstanceUID for item in batch]
    assert [(outcome.status, outcome.status_code) for outcome in outcomes] == [
        (SendStatus.DELIVERED, 0x0000),
        (SendStatus.DELIVERED, 0xB000),
        (SendStatus.RETRY, 0xA700),
        (SendStatus.FAILED, 0xA900),
        (SendStatus.FAILED, 0xC000),
    ]
    assert outcomes[1].warning == "C-STORE status 0xB000 coercion of data elements"
    assert outcomes[2].error == "C-STORE status 0xA700 out of resources"
    assert outcomes[3].error == "C-STORE status 0xA900 data set does not match SOP class"
    assert outcomes[4].error == "C-STORE status 0xC000 cannot understand"


def test_abort_mid_batch_stops_sending_and_retries_the_rest(pacs, make_image: MakeImage) -> None:
    pacs.abort_on = 2
    batch = [make_image() for _ in range(4)]

    outcomes = send_datasets(batch, peer_of(pacs), calling_ae="ECHO", timeout=3)

    assert [(outcome.status, outcome.error) for outcome in outcomes] == [
        (SendStatus.DELIVERED, None),
        (SendStatus.RETRY, "no C-STORE response (association aborted or timed out)"),
        (SendStatus.RETRY, "not sent: the association ended before this dataset"),
        (SendStatus.RETRY, "not sent: the association ended before this dataset"),
    ]
    assert len(pacs.received) == 2


def test_out_of_resources_alone_is_retryable(pacs, report: Dataset) -> None:
    pacs.statuses = [0xA700]

    (outcome,) = send_datasets([report], peer_of(pacs), calling_ae="ECHO", timeout=5)

    assert outcome.retryable and outcome.status_code == 0xA700


def test_rejected_association_is_retried_with_the_reason(picky_pacs, report: Dataset) -> None:
    (outcome,) = send_datasets([report], peer_of(picky_pacs), calling_ae="STRANGER", timeout=5)

    assert outcome.status is SendStatus.RETRY
    assert outcome.error.startswith(
        f"association rejected by PACS@127.0.0.1:{picky_pacs.port}: Rejected (Permanent)"
    )
    assert "Calling AE title not recognised" in outcome.error
    assert picky_pacs.received == []


def test_closed_port_is_retried_for_every_dataset(
    closed_port: int, report: Dataset, make_image: MakeImage
) -> None:
    outcomes = send_datasets(
        [report, make_image()], StorePeer("PACS", "127.0.0.1", closed_port), calling_ae="ECHO", timeout=2
    )

    assert [outcome.status for outcome in outcomes] == [SendStatus.RETRY, SendStatus.RETRY]
    assert outcomes[0].error.startswith(f"could not connect to PACS@127.0.0.1:{closed_port}")


def test_silent_peer_times_out_and_is_retried(raw_peer, report: Dataset) -> None:
    (outcome,) = send_datasets([report], peer_of(raw_peer), calling_ae="ECHO", timeout=0.5)

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == (
        f"timeout or disconnect: no answer to the association request from PACS@127.0.0.1:{raw_peer.port} within 0.5s"
    )


def test_abort_during_negotiation_is_retried(raw_peer, report: Dataset) -> None:
    raw_peer.reply = A_ABORT_PDU

    (outcome,) = send_datasets([report], peer_of(raw_peer), calling_ae="ECHO", timeout=5)

    assert outcome.status is SendStatus.RETRY
    assert outcome.error.startswith(
        f"association aborted by PACS@127.0.0.1:{raw_peer.port} during negotiation"
    )


def test_a_pacs_that_accepts_no_proposed_sop_class_is_a_permanent_failure(
    ct_only_pacs, report: Dataset
) -> None:
    (outcome,) = send_datasets([report], peer_of(ct_only_pacs), calling_ae="ECHO", timeout=5)

    assert outcome.status is SendStatus.FAILED
    assert "accepted none of the proposed SOP classes" in outcome.error


def test_tls_delivers_to_a_pacs_with_a_trusted_certificate(tls_pacs, certificate, report: Dataset) -> None:
    context = ssl.create_default_context(cafile=str(certificate.cert))

    (outcome,) = send_datasets([report], peer_of(tls_pacs), calling_ae="ECHO", timeout=5, tls=context)

    assert outcome.delivered
    assert [stored.SOPInstanceUID for stored in tls_pacs.received] == [report.SOPInstanceUID]


def test_tls_handshake_failure_is_retried(pacs, report: Dataset) -> None:
    """The PACS speaks plain DICOM; a TLS client cannot even associate, and says so."""
    context = ssl.create_default_context()

    (outcome,) = send_datasets([report], peer_of(pacs), calling_ae="ECHO", timeout=2, tls=context)

    assert outcome.status is SendStatus.RETRY
    assert pacs.received == []


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        (0x0000, SendStatus.DELIVERED, None),
        (0xB000, SendStatus.DELIVERED, "coercion of data elements"),
        (0xB006, SendStatus.DELIVERED, "elements discarded"),
        (0xB007, SendStatus.DELIVERED, "data set does not match SOP class"),
        (0x0107, SendStatus.DELIVERED, "warning"),
        (0xA700, SendStatus.RETRY, "out of resources"),
        (0xA7FF, SendStatus.RETRY, "out of resources"),
        (0x0110, SendStatus.RETRY, "processing failure at the PACS"),
        (0xFE00, SendStatus.RETRY, "operation cancelled by the PACS"),
        (0xA900, SendStatus.FAILED, "data set does not match SOP class"),
        (0xC000, SendStatus.FAILED, "cannot understand"),
        (0xCFFF, SendStatus.FAILED, "cannot understand"),
        (0x0122, SendStatus.FAILED, "SOP class not supported by the PACS"),
        (0x0124, SendStatus.FAILED, "not authorised by the PACS"),
        (0x1234, SendStatus.FAILED, "unknown status"),
    ],
)
def test_status_table(code: int, status: SendStatus, reason: str | None) -> None:
    assert classify_store_status(code) == (status, reason)


@pytest.mark.parametrize(
    ("datasets", "peer", "options", "error", "message"),
    [
        ([], StorePeer("PACS", "127.0.0.1", 104), {}, ValueError, "datasets must be a non-empty sequence"),
        (["x"], StorePeer("PACS", "127.0.0.1", 104), {}, TypeError, r"datasets\[0\] must be a pydicom Dataset"),
        (None, StorePeer("PACS", "127.0.0.1", 104), {"calling_ae": "A" * 17}, ValueError, "calling_ae 'AAAAAAAAAAAAAAAAA' is not a DICOM AE title"),
        (None, StorePeer("PA\\CS", "127.0.0.1", 104), {}, ValueError, "peer.ae_title 'PA\\\\\\\\CS' is not a DICOM AE title"),
        (None, StorePeer("PACS", "127.0.0.1", 0), {}, ValueError, "peer.port must be between 1 and 65535"),
        (None, StorePeer("PACS", "127.0.0.1", 104), {"timeout": 0}, ValueError, "timeout must be a positive number"),
        (None, StorePeer("PACS", "127.0.0.1", 104), {"tls": "yes"}, TypeError, "tls must be an ssl.SSLContext"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused(
    datasets: list | None, peer: StorePeer, options: dict, error: type, message: str, report: Dataset
) -> None:
    arguments = {"calling_ae": "ECHO", "timeout": 1.0, **options}
    with pytest.raises(error, match=message):
        send_datasets([report] if datasets is None else datasets, peer, **arguments)


def test_datasets_without_an_encoding_are_refused(make_image: MakeImage) -> None:
    no_meta = make_image()
    del no_meta.file_meta

    with pytest.raises(ValueError, match=r"datasets\[0\] has no file_meta.TransferSyntaxUID"):
        send_datasets([no_meta], StorePeer("PACS", "127.0.0.1", 104), calling_ae="ECHO", timeout=1)
