"""The burst (issue 17, done-when): 1000 inbound messages over concurrent connections on PostgreSQL.

Well-formed reports, resends of them (on another connection, at about the same time: the database's
unique key decides), and malformed or refused messages of every kind the listener knows, shuffled
and sent over four kept-open connections at once. Every well-formed report is stored exactly once
and answered AA; every duplicate is answered AA and stores nothing; every bad message is answered
AE or AR, naming the message, with a reason. The time it took is printed (pytest -s shows it).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from exporters.mllp import frame
from node.store.models import SignedReport
from tests.node.hl7.ris import MllpConnection, signed_mdm, signed_oru

MESSAGES = 1000
CONNECTIONS = 4
UNIQUE = 800
DUPLICATES = 100  # resends of well-formed ones
FACILITY = "BURST"


@dataclass(frozen=True)
class Sent:
    message: bytes
    expected: str  # AA, AE or AR
    control_id: str  # "" when the message has none the ACK can name
    kind: str


def bad_messages(nonce: str, count: int) -> list[Sent]:
    """`count` messages the listener must refuse (AR) or cannot read (AE), of ten kinds in turn."""

    def oru(n: int, **overrides: object) -> bytes:
        values: dict = {
            "accession": f"X{nonce}{n:05d}",
            "study_uid": f"2.25.{n}",
            "findings": "Heart normal.",
            "impression": "Normal.",
            "control_id": f"BAD{nonce}{n:05d}",
            "facility": FACILITY,
        }
        return signed_oru(**{**values, **overrides})

    kinds = [
        ("preliminary", "AR", lambda n: oru(n, status="P")),
        ("unmatchable", "AR", lambda n: oru(n, accession=None, study_uid=None)),
        ("intruder", "AR", lambda n: oru(n, facility="INTRUDER")),
        ("adt", "AR", lambda n: oru(n).replace(b"ORU^R01^ORU_R01", b"ADT^A08^ADT_A01")),
        (
            "mdm-draft",
            "AR",
            lambda n: signed_mdm(
                accession="A",
                study_uid=None,
                text="FINDINGS: x",
                control_id=f"BAD{nonce}{n:05d}",
                facility=FACILITY,
                completion="DO",
            ),
        ),  # fmt: skip
        ("oversized", "AR", lambda n: oru(n, findings="Heart size is normal.\n" * 4000)),
        ("unparseable", "AE", lambda n: oru(n).replace(b"\rPID|", b"\rQQQ|")),
        ("not-utf8", "AE", lambda n: oru(n).replace(b"Heart", b"H\xe9art")),
        ("not-hl7", "AE", lambda n: f"garbage {n} ".encode() * 20),
        ("no-control-id", "AR", lambda n: oru(n).replace(f"|BAD{nonce}{n:05d}|".encode(), b"||")),
    ]
    sent = []
    for n in range(count):
        kind, expected, build = kinds[n % len(kinds)]
        control_id = "" if kind in ("not-hl7", "no-control-id") else f"BAD{nonce}{n:05d}"
        sent.append(Sent(build(n), expected, control_id, kind))
    return sent


def msa(ack: bytes) -> list[str]:
    segment = next(line for line in ack.decode().split("\r") if line.startswith("MSA"))
    return [*segment.split("|"), "", "", ""][1:4]


@pytest.mark.integration
@pytest.mark.slow
def test_a_burst_of_1000_messages_stores_every_good_one_once_and_answers_every_bad_one(
    pg_database, start_listener
):
    nonce = uuid.uuid4().hex[:4]
    good = [
        Sent(
            signed_oru(
                accession=f"B{nonce}{n:05d}",
                study_uid=f"2.25.{int(nonce, 16)}.{n}",
                findings=f"Heart size is normal.\nStudy {n}: no pleural effusion.",
                impression="No acute disease.",
                control_id=f"OK{nonce}{n:05d}",
                facility=FACILITY,
                status="C" if n % 10 == 0 else "F",
            ),
            "AA",
            f"OK{nonce}{n:05d}",
            "good",
        )
        for n in range(UNIQUE)
    ]
    rng = random.Random(17)
    duplicates = [Sent(s.message, "AA", s.control_id, "duplicate") for s in rng.sample(good, DUPLICATES)]
    sent = good + duplicates + bad_messages(nonce, MESSAGES - UNIQUE - DUPLICATES)
    rng.shuffle(sent)
    assert len(sent) == MESSAGES
    listener = start_listener(pg_database, facilities=(FACILITY,), max_message_bytes=64 * 1024)
    answers: dict[int, bytes] = {}
    failures: list[BaseException] = []

    def send_share(share: int) -> None:
        try:
            with MllpConnection("127.0.0.1", listener.port, timeout=30) as connection:
                for index in range(share, MESSAGES, CONNECTIONS):
                    noise = b"\r\n" if index % 7 == 0 else b""  # a sender's stray bytes between frames
                    connection.send_raw(noise + frame(sent[index].message))
                    answers[index] = connection.read_ack()
        except BaseException as error:  # reported below, with the rest
            failures.append(error)

    started = time.monotonic()
    threads = [threading.Thread(target=send_share, args=(share,)) for share in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    elapsed = time.monotonic() - started
    assert not failures, failures
    assert len(answers) == MESSAGES

    for index, item in enumerate(sent):
        code, control_id, reason = msa(answers[index])
        assert (code, control_id) == (item.expected, item.control_id), (item.kind, answers[index])
        if item.expected != "AA":
            assert reason and b"\rERR|" in answers[index], (item.kind, answers[index])
    with pg_database.sessions() as session:
        keys = session.scalars(
            select(SignedReport.message_key).where(SignedReport.message_key.like(f"{FACILITY}|%{nonce}%"))
        ).all()
        per_key = session.execute(
            select(SignedReport.message_key, func.count())
            .where(SignedReport.message_key.like(f"{FACILITY}|%{nonce}%"))
            .group_by(SignedReport.message_key)
            .having(func.count() > 1)
        ).all()
    assert per_key == []
    assert sorted(keys) == sorted(f"{FACILITY}|{item.control_id}" for item in good)
    counts = {kind: sum(item.kind == kind for item in sent) for kind in sorted({item.kind for item in sent})}
    print(
        f"\nHL7 burst: {MESSAGES} messages over {CONNECTIONS} connections in {elapsed:.1f} s "
        f"({MESSAGES / elapsed:.0f} messages/s) on PostgreSQL; {counts}"
    )
