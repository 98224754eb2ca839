"""The fault suite's site: studies with known identities, a sender, and the ledger that counts them.

Every scenario sends studies through a real node process and counts, at the end: studies sent
(C-STORE answered success), rows in the node's database, SRs at the PACS and ORUs at the RIS per
study. A study is *lost* when it was sent but did not get its SR and ORU; *duplicated* when its
PACS holds more than one SR instance or its RIS more than one distinct ORU for it (a message sent
again under the same SOP Instance UID / control id replaces the first at the PACS and is
recognised by the RIS: that is counted apart, as *re-sent*).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts
from sqlalchemy import select

from node.store.database import Database
from node.store.models import Study
from node.store.states import StudyState

DEMO_STUDY = Path(__file__).resolve().parents[2] / "echo" / "assets" / "demo" / "chest-pa.dcm"
CALLING_AE = "STORESCU"
_counter = itertools.count(1)


def chest_study(prefix: str, *, patient_name: str | None = None, patient_id: str | None = None) -> Dataset:
    """The bundled chest PA as a new study of a new patient: new UIDs, accession `prefix`NNNN."""
    number = next(_counter)
    image = dcmread(DEMO_STUDY)
    image.StudyInstanceUID, image.SeriesInstanceUID = generate_uid(), generate_uid()
    image.SOPInstanceUID = generate_uid()
    image.file_meta.MediaStorageSOPInstanceUID = image.SOPInstanceUID
    image.AccessionNumber = f"{prefix}{number:04d}"[:16]
    image.PatientID = patient_id or f"PAT{prefix}{number:04d}"[:64]
    image.PatientName = patient_name or f"Fault^Patient{number}"
    return image


def send(
    port: int, datasets: list[Dataset], *, calling_ae: str = CALLING_AE, called_ae: str = "ECHO"
) -> list[int]:
    """C-STORE `datasets` over one association; the status per dataset (-1: no answer)."""
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = StoragePresentationContexts[:120]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    association = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not association.is_established:
        return [-1] * len(datasets)
    statuses = []
    try:
        for dataset in datasets:
            answer = association.send_c_store(dataset)
            statuses.append(int(answer.Status) if "Status" in answer else -1)
    finally:
        if association.is_established:
            association.release()
    return statuses


@dataclass
class Row:
    scenario: str
    sent: int
    rows: int
    sr: int
    oru: int
    lost: int
    duplicated: int
    resent: int  # the same SR UID or ORU control id received again (idempotent at the peer)


@dataclass
class Ledger:
    """What one scenario sent; `count()` compares it with what the peers and the database hold."""

    scenario: str
    expect_sr: bool = True
    expect_oru: bool = True
    sent: dict[str, str] = field(default_factory=dict)  # study UID -> accession

    def sent_ok(self, dataset: Dataset) -> None:
        self.sent[str(dataset.StudyInstanceUID)] = str(dataset.AccessionNumber)

    def count(self, pacs, ris, study_uids_in_database: set[str]) -> Row:
        sr_uids: dict[str, set[str]] = {}
        sr_copies: Counter[str] = Counter()
        for sr in list(pacs.received):
            sr_uids.setdefault(str(sr.StudyInstanceUID), set()).add(str(sr.SOPInstanceUID))
            sr_copies[str(sr.SOPInstanceUID)] += 1
        oru_ids: dict[str, set[str]] = {}
        oru_copies: Counter[str] = Counter()
        for message in list(ris.received):
            control_id = str(message.segment("MSH")[10])
            oru_ids.setdefault(str(message.segment("OBR")[18]), set()).add(control_id)
            oru_copies[control_id] += 1
        lost = duplicated = 0
        for study_uid, accession in self.sent.items():
            srs, orus = sr_uids.get(study_uid, set()), oru_ids.get(accession, set())
            if (self.expect_sr and not srs) or (self.expect_oru and not orus):
                lost += 1
            if len(srs) > 1 or len(orus) > 1:
                duplicated += 1
        resent = sum(n - 1 for n in sr_copies.values()) + sum(n - 1 for n in oru_copies.values())
        mine = set(self.sent)
        return Row(
            scenario=self.scenario,
            sent=len(self.sent),
            rows=len(mine & study_uids_in_database),
            sr=sum(len(sr_uids.get(uid, ())) for uid in mine),
            oru=sum(len(oru_ids.get(accession, ())) for accession in self.sent.values()),
            lost=lost,
            duplicated=duplicated,
            resent=resent,
        )


RESULTS: list[Row] = []  # printed as a table at the end of the run (see conftest)


def record(row: Row) -> Row:
    RESULTS.append(row)
    return row


def table(rows: list[Row]) -> str:
    header = ("scenario", "sent", "rows", "SR", "ORU", "lost", "duplicated", "re-sent")
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    lines += [" | ".join(str(value) for value in asdict(row).values()) for row in rows]
    return "\n".join(lines)


class Ris:
    """An MLLP RIS on a fixed loopback port that can go down and come back (`stop()` / `start()`).

    It answers each ORU by `site.script` (tests/e2e's SiteRis: "AA", "AE", "AR" or "silent")."""

    def __init__(self, site_ris, port: int) -> None:
        self.site, self.port, self._server = site_ris, port, None
        self.site.port = port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from tests.e2e.conftest import _start_ris

        self._server = _start_ris(self.site, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


SETTLED = (StudyState.DELIVERED, StudyState.FAILED)


class StudyStates:
    """What the ledger reads from a node's database (mixed into each scenario's node handle)."""

    database: Database

    def states(self, study_uids) -> dict[str, StudyState]:
        with self.database.sessions() as session:
            return dict(
                session.execute(
                    select(Study.study_instance_uid, Study.state).where(
                        Study.study_instance_uid.in_(list(study_uids))
                    )
                ).all()
            )

    def study_uids(self) -> set[str]:
        with self.database.sessions() as session:
            return set(session.scalars(select(Study.study_instance_uid)))


def settle(node: StudyStates, ledger: Ledger, pacs, ris_site, wait, logs, timeout_s: float = 120) -> Row:
    """Wait until every study the ledger sent is delivered or failed; record and return its row."""
    wait(
        lambda: (
            len(states := node.states(ledger.sent)) == len(ledger.sent)
            and all(state in SETTLED for state in states.values())
        ),
        timeout_s,
        f"{ledger.scenario}: every study delivered or failed",
        logs,
    )
    return record(ledger.count(pacs, ris_site, node.study_uids()))
