"""`echo-admin resend` and `echo-admin models` on a real (SQLite) node database."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from exporters.outcome import AckOutcome, SendStatus, StoreOutcome
from node.delivery.outbox import Outbox
from node.ops.admin import main
from node.store.database import Database
from node.store.models import Delivery, Study, StudyEvent
from node.store.states import DeliveryKind, DeliveryStatus, StudyState

PACS = "PACS@127.0.0.1:11113"
RIS = "127.0.0.1:2575"


def run_admin(args: list[str], capsys, monkeypatch, settings, **env: str) -> tuple[int, str, str]:
    monkeypatch.setenv("ECHO_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ECHO_SR_TEMPLATES", ",".join(settings.sr_templates))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("sys.argv", ["echo-admin", *args])
    capsys.readouterr()  # only what the command itself prints
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def refuse_oru(database: Database, settings) -> None:
    """One outbox tick whose RIS answers AR: the ORU fails for good, the study with it."""

    def ris(message, host, port, *, control_id, timeout, tls_context):
        return AckOutcome(
            status=SendStatus.FAILED, error="receiver rejected the message (AR): no order", ack_code="AR"
        )

    def pacs(datasets, peer, **options):
        return [
            StoreOutcome(status=SendStatus.DELIVERED, sop_instance_uid=d.SOPInstanceUID, status_code=0)
            for d in datasets
        ]

    Outbox(database.sessions, settings, store=pacs, send_oru=ris).run_due()


def test_resend_brings_a_failed_study_back_with_the_same_identifiers(
    database: Database, node_settings, store_study, images, report_for, capsys, monkeypatch
) -> None:
    settings = node_settings(pacs=PACS, ris=RIS)
    study_id = store_study(images.chest(accession="ACC-R1"))
    report_id = report_for(study_id, settings)
    refuse_oru(database, settings)
    with database.sessions() as session:
        before = {row.kind: row.message_id for row in session.scalars(select(Delivery))}
        assert session.get_one(Study, study_id).state is StudyState.FAILED

    code, out, err = run_admin(
        ["resend", "ACC-R1"], capsys, monkeypatch, settings, ECHO_PACS=PACS, ECHO_RIS=RIS
    )

    assert (code, err) == (0, "")
    assert f"left as is (already delivered; --all sends it again): SR to {PACS}" in out
    assert f"reset: ORU to {RIS} (was failed)" in out
    assert f"study {study_id}, report {report_id}: inferred" in out
    with database.sessions() as session:
        rows = {row.kind: row for row in session.scalars(select(Delivery))}
        moves = [
            (event.from_state, event.to_state, event.reason)
            for event in session.scalars(
                select(StudyEvent).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id)
            )
        ][-2:]
    assert {kind: row.message_id for kind, row in rows.items()} == before
    oru, sr = rows[DeliveryKind.ORU], rows[DeliveryKind.SR]
    assert (oru.status, oru.attempts, oru.last_error, oru.ack_code) == (DeliveryStatus.PENDING, 0, None, None)
    assert (sr.status, sr.attempts) == (DeliveryStatus.DELIVERED, 1), "the PACS has it: not sent twice"
    assert moves == [
        (StudyState.FAILED, StudyState.QUEUED, "operator resend"),
        (StudyState.QUEUED, StudyState.INFERRED, f"report {report_id} sent again"),
    ]


def test_resend_all_sends_again_what_was_delivered_too(
    database: Database, node_settings, store_study, images, report_for, capsys, monkeypatch
) -> None:
    settings = node_settings(pacs=PACS, ris=RIS)
    study_id = store_study(images.chest())
    report_for(study_id, settings)
    refuse_oru(database, settings)
    code, out, _ = run_admin(
        ["resend", "--all", str(study_id)], capsys, monkeypatch, settings, ECHO_PACS=PACS, ECHO_RIS=RIS
    )
    assert code == 0
    assert f"reset: SR to {PACS} (was delivered)" in out and f"reset: ORU to {RIS} (was failed)" in out


def test_resend_adds_a_destination_configured_since(
    database: Database, node_settings, store_study, images, report_for, capsys, monkeypatch
) -> None:
    settings = node_settings(pacs=PACS)
    study_id = store_study(images.chest())
    report_for(study_id, settings)
    code, out, _ = run_admin(["resend", str(study_id)], capsys, monkeypatch, settings, ECHO_RIS=RIS)
    assert code == 0
    assert f"new: ORU to {RIS}" in out and f"left as is (not configured now): SR to {PACS}" in out
    with database.sessions() as session:
        kinds = sorted(row.kind for row in session.scalars(select(Delivery)))
    assert kinds == [DeliveryKind.ORU, DeliveryKind.SR]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["resend", "404"],
            {"ECHO_PACS": PACS},
            "no study with id, Study Instance UID or accession number '404'",
        ),
        (["resend", "1"], {}, "neither ECHO_PACS nor ECHO_RIS is set: there is nowhere to resend to"),
        (["resend", "1"], {"ECHO_RIS": RIS}, "study 1 has no report to resend (it is queued)"),
        (
            ["resend", "ACC0042"],
            {"ECHO_RIS": RIS},
            "accession ACC0042 names 2 studies (ids 1, 2); give the id",
        ),
    ],
)
def test_resend_refuses_in_one_line(
    args, env, message, database: Database, settings, store_study, images, capsys, monkeypatch
) -> None:
    store_study(images.chest())
    store_study(images.chest())
    code, out, err = run_admin(args, capsys, monkeypatch, settings, **env)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"echo-admin: error: {message}"]


def test_models_lists_versions_and_the_active_one(
    database: Database, settings, store_study, images, report_for, engine, capsys, monkeypatch
) -> None:
    code, out, _ = run_admin(["models"], capsys, monkeypatch, settings)
    assert (code, out.strip()) == (
        0,
        "no model versions yet: a worker registers its model with the first study it reports",
    )
    report_for(store_study(images.chest()), settings)
    report_for(store_study(images.chest()), settings)
    engine.manifest.version = "fedcba9876543210"
    report_for(store_study(images.chest()), settings)
    code, out, _ = run_admin(["models"], capsys, monkeypatch, settings)
    lines = [line for line in out.splitlines() if "echo-test-student" in line]
    assert code == 0 and len(lines) == 2
    newest, oldest = lines
    assert "fedcba9876543210" in newest and "│ 1 " in newest and "yes" in newest
    assert "0123456789abcdef" in oldest and "│ 2 " in oldest and "yes" not in oldest


def test_a_delivered_study_sent_again_shows_what_the_new_send_came_to(
    database: Database, node_settings, store_study, images, report_for, capsys, monkeypatch
) -> None:
    settings = node_settings(pacs=PACS, ris=RIS)
    study_id = store_study(images.chest())
    report_for(study_id, settings)

    def accept(datasets, peer, **options):
        return [
            StoreOutcome(status=SendStatus.DELIVERED, sop_instance_uid=d.SOPInstanceUID, status_code=0)
            for d in datasets
        ]

    def aa(message, host, port, *, control_id, timeout, tls_context):
        return AckOutcome(status=SendStatus.DELIVERED, ack_code="AA")

    Outbox(database.sessions, settings, store=accept, send_oru=aa).run_due()
    with database.sessions() as session:
        assert session.get_one(Study, study_id).state is StudyState.DELIVERED

    code, out, _ = run_admin(
        ["resend", "--all", str(study_id)], capsys, monkeypatch, settings, ECHO_PACS=PACS, ECHO_RIS=RIS
    )
    assert code == 0 and f"study {study_id}, report" in out and ": inferred" in out
    refuse_oru(database, settings)  # this time the RIS refuses it
    with database.sessions() as session:
        assert session.get_one(Study, study_id).state is StudyState.FAILED, "not still 'delivered'"


def test_status_shows_the_messages_parked_while_a_destination_is_down(
    database: Database, node_settings, store_study, images, report_for, capsys, monkeypatch
) -> None:
    settings = node_settings(pacs=PACS, ris=RIS)
    report_for(store_study(images.chest()), settings)

    def down(datasets, peer, **options):
        return [
            StoreOutcome(status=SendStatus.RETRY, error="could not connect", sop_instance_uid=d.SOPInstanceUID)
            for d in datasets
        ]

    def aa(message, host, port, *, control_id, timeout, tls_context):
        return AckOutcome(status=SendStatus.DELIVERED, ack_code="AA")

    Outbox(database.sessions, settings, store=down, send_oru=aa).run_due()
    code, out, _ = run_admin(["status"], capsys, monkeypatch, settings)
    assert code == 0
    assert "outbox: 0 pending, 1 delivered, 1 retrying, 0 failed, 0 held; the oldest waiting since " in out
    assert "next try " in out
