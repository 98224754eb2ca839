"""The SCP over real associations: DCMTK's echoscu/storescu as the PACS, pynetdicom for exact statuses."""

from __future__ import annotations

import errno
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from node.serve.runtime import Node
from node.store.models import Association, Instance, Study
from node.store.states import AssociationOutcome

pytestmark = pytest.mark.integration

AE_ARGS = ("-aet", "STORESCU", "-aec", "ECHO")


def rows(node: Node, model: type) -> list:
    assert node.database is not None
    with node.database.sessions() as session:
        return list(session.scalars(select(model).order_by(model.id)))


def storescu(
    dcmtk, node: Node, *files: Path, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return dcmtk("storescu", *AE_ARGS, "-R", *extra, "127.0.0.1", str(node.settings.port), *map(str, files))


def test_echo_succeeds_and_is_audited(dcmtk, start_node, make_settings, wait_for) -> None:
    node = start_node(make_settings())
    result = dcmtk("echoscu", *AE_ARGS, "127.0.0.1", str(node.settings.port))
    assert result.returncode == 0, result.stderr
    audit = wait_for(lambda: [a for a in rows(node, Association) if a.ended_at], what="association closed")
    assert [(a.calling_ae, a.called_ae, a.host, a.outcome) for a in audit] == [
        ("STORESCU", "ECHO", "127.0.0.1", AssociationOutcome.RELEASED)
    ]


@pytest.mark.parametrize(
    ("calling", "called", "diagnostic", "reason"),
    [
        ("INTRUDER", "ECHO", 0x03, "calling AE title not recognised"),
        ("STORESCU", "NOT-ECHO", 0x07, "called AE title not recognised"),
    ],
)
def test_unknown_callers_and_wrong_called_titles_are_rejected_at_association(
    dcmtk, scu, start_node, make_settings, calling: str, called: str, diagnostic: int, reason: str
) -> None:
    node = start_node(make_settings())
    result = dcmtk("echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(node.settings.port))
    assert result.returncode != 0
    association = scu.associate(node.settings, calling_ae=calling, called_ae=called)
    assert association.is_rejected
    rejection = association.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, diagnostic)
    audit = rows(node, Association)
    assert [(a.calling_ae, a.outcome, a.reason) for a in audit] == [
        (calling, AssociationOutcome.REJECTED, reason)
    ] * 2
    assert all(a.ended_at is not None for a in audit)


def test_a_jpeg2000_image_is_stored_as_sent(dcmtk, start_node, make_settings, dicom, tmp_path: Path) -> None:
    node = start_node(make_settings())
    sent = dicom.save(dicom.as_jpeg2000(dicom.chest_image()), tmp_path / "j2k.dcm")
    result = storescu(dcmtk, node, sent, extra=("-xv",))  # propose JPEG 2000 lossless
    assert result.returncode == 0, result.stderr
    [instance] = rows(node, Instance)
    stored, original = dcmread(instance.path), dcmread(sent)
    assert instance.transfer_syntax_uid == JPEG2000Lossless
    assert stored.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert stored.PixelData == original.PixelData  # not transcoded
    assert (stored.pixel_array == original.pixel_array).all()


def test_a_corrupt_file_is_refused_and_the_next_one_in_the_association_stored(
    dcmtk, start_node, make_settings, dicom, tmp_path: Path, wait_for
) -> None:
    node = start_node(make_settings())
    corrupt = dicom.chest_image()
    del corrupt.StudyInstanceUID
    good = dicom.chest_image()
    files = [dicom.save(corrupt, tmp_path / "1.dcm"), dicom.save(good, tmp_path / "2.dcm")]
    result = storescu(dcmtk, node, *files, extra=("--no-halt",))
    assert result.returncode == 0, result.stderr
    assert [i.sop_instance_uid for i in rows(node, Instance)] == [good.SOPInstanceUID]
    [audit] = wait_for(lambda: [a for a in rows(node, Association) if a.ended_at], what="association closed")
    assert (audit.outcome, audit.files_stored, audit.files_failed) == (AssociationOutcome.RELEASED, 1, 1)


def test_the_same_file_sent_twice_gives_one_row(
    dcmtk, start_node, make_settings, dicom, tmp_path: Path
) -> None:
    node = start_node(make_settings())
    image = dicom.save(dicom.chest_image(), tmp_path / "same.dcm")
    for _ in range(2):
        assert storescu(dcmtk, node, image).returncode == 0
    assert len(rows(node, Instance)) == 1
    assert len(rows(node, Study)) == 1


def test_parallel_associations_for_one_study_make_one_study(
    dcmtk, start_node, make_settings, dicom, tmp_path: Path
) -> None:
    node = start_node(make_settings(max_associations=4))
    study_uid = dicom.chest_image().StudyInstanceUID
    batches = [
        [dicom.save(dicom.chest_image(study_uid=study_uid), tmp_path / f"{b}" / f"{i}.dcm") for i in range(5)]
        for b in range(4)
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda files: storescu(dcmtk, node, *files), batches))
    assert [r.returncode for r in results] == [0, 0, 0, 0]
    assert len(rows(node, Study)) == 1
    assert len(rows(node, Instance)) == 20


def test_statuses_per_outcome_and_the_node_keeps_serving(
    scu, start_node, make_settings, dicom, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = start_node(make_settings())
    missing = dicom.chest_image()
    del missing.StudyInstanceUID
    [ok, refused] = scu.store(node.settings, dicom.chest_image(), missing)
    assert (ok.Status, refused.Status) == (0x0000, 0xA900)
    assert refused.ErrorComment == "incomplete: StudyInstanceUID is missing"

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("node.dicom.spool.os.fsync", disk_full)
        [full] = scu.store(node.settings, dicom.chest_image())
    assert (full.Status, full.ErrorComment) == (
        0xA700,
        "disk full: cannot write file: No space left on device",
    )

    def database_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    with monkeypatch.context() as patch:
        patch.setattr("node.dicom.ingest._upsert_instance", database_down)
        [down] = scu.store(node.settings, dicom.chest_image())
    assert (down.Status, down.ErrorComment) == (
        0xA700,
        "database unavailable: database error (Exception)",
    )

    [after] = scu.store(node.settings, dicom.chest_image())
    assert after.Status == 0x0000
    assert len(rows(node, Instance)) == 2  # the first and the last; nothing lost, nothing half-stored


def test_tls_when_configured(scu, dcmtk, start_node, make_settings, tmp_path: Path) -> None:
    cert, key = tmp_path / "node.crt", tmp_path / "node.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    node = start_node(make_settings(tls_cert=cert, tls_key=key))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    association = scu.associate(node.settings, tls_args=(client, "127.0.0.1"))
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000
    association.release()
    plain = dcmtk("echoscu", *AE_ARGS, "-to", "5", "127.0.0.1", str(node.settings.port))
    assert plain.returncode != 0


def test_an_association_whose_admission_check_fails_is_rejected(
    scu, start_node, make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = start_node(make_settings())

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the admission check")

    monkeypatch.setattr("node.dicom.access.AccessPolicy.check", fail)
    association = scu.associate(node.settings)
    assert association.is_rejected
    rejection = association.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x02, 0x03, 0x01)


def test_admission_writes_no_row_the_first_instance_brings_it(scu, start_node, make_settings, dicom) -> None:
    node = start_node(make_settings())
    association = scu.associate(node.settings)
    assert association.is_established
    assert rows(node, Association) == []  # admitted in memory only
    assert association.send_c_store(dicom.chest_image()).Status == 0x0000
    [open_row] = rows(node, Association)
    assert (open_row.outcome, open_row.ended_at) == (AssociationOutcome.ACCEPTED, None)  # holds its study
    [instance] = rows(node, Instance)
    assert instance.association_id == open_row.id
    association.release()


def test_an_association_that_stored_nothing_gets_its_row_when_it_ends(
    scu, start_node, make_settings, dicom, wait_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = start_node(make_settings())

    def database_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    association = scu.associate(node.settings)
    with monkeypatch.context() as patch:
        patch.setattr("node.dicom.ingest._upsert_instance", database_down)
        assert association.send_c_store(dicom.chest_image()).Status == 0xA700
    association.release()
    [audit] = wait_for(lambda: [a for a in rows(node, Association) if a.ended_at], what="association closed")
    assert (audit.outcome, audit.files_stored, audit.files_failed) == (AssociationOutcome.RELEASED, 0, 1)
    assert rows(node, Instance) == []
