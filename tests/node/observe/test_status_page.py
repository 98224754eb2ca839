"""/status: what it shows (states, timings, failures with their reasons, the outbox, the model, the
plots), what it never shows (who the patient is), who may read it, and that it never takes the
listener down. One test draws it in headless Chromium through scripts/status-page-screenshot.py."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from echo.errors import UserError
from node.observe.http import ObserveServer, Probes, StatusRoute, registry_with
from node.observe.sample_node import seed_sample_node
from node.observe.status_access import StatusAccess, hide_token
from node.observe.status_page import StatusPage
from node.observe.status_queries import REDACTED
from node.serve.observe import start_observe, status_route
from node.store.models import Delivery, Instance, ModelVersion, Report, SignedReport, Study, StudyEvent
from node.store.states import DeliveryKind, DeliveryStatus, ModelRole, StudyState

NOW = datetime(2026, 12, 2, 16, 40, tzinfo=UTC)
REPOSITORY = Path(__file__).resolve().parents[3]
TOKEN = "s3cret-status-token"


def page(database) -> StatusPage:
    return StatusPage(database.sessions, "ECHO", clock=lambda: NOW, zone=UTC)


def text_of(html: str) -> str:
    """The page's visible words, one space between them (tags and the SVGs' markup dropped)."""
    markup = re.sub(r"<(style|script)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def add_study(session, number: int, state: StudyState, received: datetime, **fields) -> Study:
    study = Study(
        study_instance_uid=f"1.2.3.{number}",
        accession_number=f"ACC{number:04d}",
        patient_id=f"MRN-{number:04d}",
        modality="CR",
        state=state,
        first_received_at=received - timedelta(seconds=2),
        last_received_at=received,
        updated_at=received,
        **fields,
    )
    session.add(study)
    session.flush()
    return study


def move(session, study: Study, to_state: StudyState, at: datetime, reason: str | None = None) -> None:
    session.add(StudyEvent(study_id=study.id, from_state=None, to_state=to_state, reason=reason, at=at))
    study.updated_at = at


def fill_small_node(session) -> dict[str, int]:
    """A delivered study, one failed, one skipped, a drafted one whose ORU is held, and the model."""
    model = ModelVersion(
        name="echo-student",
        version="feedc0ffee0123456789",
        path="/m",
        sha256="0" * 64,
        block_size=8,
        created_at=NOW - timedelta(days=3),
        active=True,
        role=ModelRole.REGISTERED,
    )
    session.add(model)
    delivered = add_study(session, 1, StudyState.DELIVERED, NOW - timedelta(hours=2))
    move(session, delivered, StudyState.INFERRED, delivered.last_received_at + timedelta(seconds=13))
    move(session, delivered, StudyState.DELIVERED, delivered.last_received_at + timedelta(seconds=15.5))
    failed = add_study(session, 2, StudyState.FAILED, NOW - timedelta(hours=1))
    move(
        session, failed, StudyState.FAILED, NOW - timedelta(minutes=50), "inference gave up: 3 attempts lost"
    )
    skipped = add_study(
        session, 3, StudyState.SKIPPED, NOW - timedelta(minutes=30), skip_reason="lateral view only: waiting"
    )
    held = add_study(session, 4, StudyState.INFERRED, NOW - timedelta(minutes=20))
    move(session, held, StudyState.INFERRED, held.last_received_at + timedelta(seconds=14))
    session.flush()
    for study in (delivered, held):
        report = Report(
            study_id=study.id,
            model_version_id=model.id,
            findings="Lungs clear.",
            impression="Normal chest.",
            text="Lungs clear. Normal chest.",
            tokens=64,
            forwards=8,
            seconds=2.0,
            created_at=study.last_received_at + timedelta(seconds=13),
            gate="passed",
        )
        session.add(report)
        session.flush()
        status = DeliveryStatus.HELD if study is held else DeliveryStatus.DELIVERED
        session.add(
            Delivery(
                report_id=report.id,
                kind=DeliveryKind.ORU,
                target="ris.example:2575",
                message_id=f"C{study.id}",
                status=status,
                attempts=1,
                last_error="held: the ORU's patient does not match the frozen identity"
                if study is held
                else None,
                created_at=report.created_at,
                updated_at=report.created_at,
            )
        )
    return {"delivered": delivered.id, "failed": failed.id, "skipped": skipped.id, "held": held.id}


# ---- what the page shows -----------------------------------------------------------------------


def test_an_empty_database_renders_with_every_section_saying_so(sqlite_db):
    rendered = page(sqlite_db).render()
    assert rendered.status == 200
    words = text_of(rendered.html)
    assert "No study received yet." in words
    assert "No model version yet" in words
    assert "No signed report has come back yet" in words
    assert "No study was drafted in the last 24 hours." in words
    assert "nothing waits" in words
    assert "<svg" not in rendered.html  # nothing to plot


def test_states_timings_failures_outbox_and_model(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        ids = fill_small_node(session)
    rendered = page(sqlite_db).render()
    assert rendered.status == 200
    words = text_of(rendered.html)
    row = re.search(rf"{ids['delivered']} delivered CR 0 (\S+) (\S+) (\S+ s) (\S+ s)", words)
    assert row is not None, words
    assert row.groups() == ("14:39:58", "14:40:00", "13.0 s", "15.5 s")  # from the last image
    assert re.search(rf"{ids['held']} inferred CR 0 \S+ \S+ 14.0 s – ", words)
    assert f"{ids['skipped']} skipped CR 0" in words and "lateral view only: waiting" in words
    assert re.search(rf"{ids['failed']} 15:50:00 inference gave up: 3 attempts lost", words)  # failed studies
    assert re.search(rf"\d+ {ids['held']} ORU ris.example:2575 held 1 \S+ held: the ORU's patient", words)
    assert re.search(r"1 RECEIVED|1 received", words) is None  # no study is "received"
    for state, count in (("delivered", 1), ("failed", 1), ("skipped", 1), ("inferred", 1), ("queued", 0)):
        assert f'<div class="n">{count}</div>\n    <div class="label">{state}</div>' in rendered.html
    assert re.search(r"delivered 1 retrying 0 failed 0 held 1", words)
    assert "echo-student feedc0ffee012345" in words and "registered" in words and "drafts written 2" in words
    assert rendered.html.count("<svg") == 2  # latency and drafts per hour; no agreement yet


def test_the_sample_node_shows_its_plots_gate_and_agreement(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        seed_sample_node(session, NOW)
    rendered = page(sqlite_db).render()
    assert rendered.status == 200
    assert rendered.html.count("<svg") == 3
    assert "<script src" not in rendered.html and 'href="http' not in rendered.html  # loads nothing
    words = text_of(rendered.html)
    assert "Promotion gate: passed on 240 held-out studies, against version 1" in words
    assert re.search(r"echo-site-student c41e9b77 \d+ 0\.\d\d", words)  # agreement per model version
    assert "connection refused" not in words  # retrying is not a failure for an operator
    assert re.search(r"retrying 3 failed 0 held 1 oldest waiting queued 19 min \d\d s ago", words)


def test_no_patient_identifiers_even_when_the_database_and_a_peer_hold_them(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        seed_sample_node(session, NOW)
        # A RIS that echoes the accession and patient id in its error, a reason naming the study UID.
        delivery, study = session.execute(
            select(Delivery, Study).join(Report, Report.id == Delivery.report_id).join(Study).limit(1)
        ).one()
        delivery.status = DeliveryStatus.FAILED
        delivery.last_error = f"AR: unknown order {study.accession_number} for patient {study.patient_id}"
        delivery.updated_at = NOW
        failed = session.scalars(select(Study).where(Study.state == StudyState.FAILED)).first()
        move(session, failed, StudyState.FAILED, NOW, f"study {failed.study_instance_uid} unreadable")
        identifiers = {
            value
            for row in session.execute(
                select(Study.patient_id, Study.accession_number, Study.study_instance_uid)
            )
            for value in row
        }
        identifiers |= set(session.scalars(select(Instance.sop_instance_uid)))
        texts = set(session.scalars(select(SignedReport.findings))) | set(
            session.scalars(select(Report.findings))
        )
    html = page(sqlite_db).render().html
    assert f"AR: unknown order {REDACTED} for patient {REDACTED}" in text_of(html)
    assert f"study {REDACTED} unreadable" in text_of(html)
    assert len(identifiers) > 500
    leaked = sorted(value for value in identifiers if value in html)
    assert leaked == []
    assert [text for text in texts if text in html] == []  # neither drafts nor signed reports


@pytest.mark.slow
def test_renders_within_200_ms_with_1000_studies_on_sqlite(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        seed_sample_node(session, NOW, studies_today=60, per_week=120)
        assert session.scalar(select(func.count(Study.id))) >= 1000
    status_page = page(sqlite_db)
    status_page.render()  # the templates compiled once, as in a running node
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        assert status_page.render().status == 200
        timings.append(time.perf_counter() - started)
    print(f"status page render with 1020 studies: {min(timings) * 1000:.0f} ms (best of 3)")
    assert min(timings) < 0.2


# ---- never down with the database --------------------------------------------------------------


def unreachable_database():
    engine = create_engine("postgresql+psycopg://echo@127.0.0.1:9/echo", connect_args={"connect_timeout": 2})
    return engine, sessionmaker(engine)


def test_a_database_that_cannot_be_read_gives_a_503_page_and_the_listener_keeps_serving():
    engine, sessions = unreachable_database()
    status_page = StatusPage(sessions, "ECHO", clock=lambda: NOW, zone=UTC)
    server = ObserveServer(
        "127.0.0.1", 0, Probes(registry_with(), {}), StatusRoute(status_page, StatusAccess(None))
    )
    server.start()
    try:
        status, body, _ = get(server, "/status")
        assert status == 503
        assert "the database cannot be read (OperationalError)" in text_of(body)
        assert get(server, "/healthz")[:2] == (200, "ok\n")
    finally:
        server.stop()
        engine.dispose()


# ---- who may read it ---------------------------------------------------------------------------


def get(server: ObserveServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


@pytest.fixture
def serve_status(sqlite_db):
    started: list[ObserveServer] = []

    def start(access: StatusAccess, host: str = "127.0.0.1") -> ObserveServer:
        route = StatusRoute(page(sqlite_db), access)
        server = ObserveServer(host, 0, Probes(registry_with(), {"database": lambda: None}), route).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_with_a_token_the_page_asks_for_it_and_the_probes_do_not(serve_status):
    server = serve_status(StatusAccess(TOKEN))
    status, body, headers = get(server, "/status")
    assert (status, body) == (
        401,
        "a token is required: send 'Authorization: Bearer <token>' or ?token=<token>\n",
    )
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert get(server, "/status", {"Authorization": "Bearer wrong"})[:2] == (
        401,
        "wrong token: send 'Authorization: Bearer <token>' or ?token=<token>\n",
    )
    assert get(server, f"/status?token={TOKEN}x")[0] == 401
    assert get(server, "/status", {"Authorization": f"Basic {TOKEN}"})[0] == 401
    status, body, headers = get(server, "/status", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "<title>ECHO · ECHO node status</title>" in body
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert get(server, f"/status?refresh=1&token={TOKEN}")[0] == 200
    assert get(server, "/healthz")[:2] == (200, "ok\n")
    assert get(server, "/readyz")[:2] == (200, "ready\n")
    assert get(server, "/metrics")[0] == 200


def test_without_a_token_only_a_loopback_listener_serves_it(serve_status):
    assert get(serve_status(StatusAccess(None)), "/status")[0] == 200
    everywhere = serve_status(StatusAccess(None), host="0.0.0.0")
    status, body, _ = get(everywhere, "/status")
    assert (status, body) == (
        403,
        "/status is off: ECHO_HTTP listens on 0.0.0.0, not loopback, and no ECHO_STATUS_TOKEN_FILE is set\n",
    )
    assert get(everywhere, "/healthz")[0] == 200
    with_token = serve_status(StatusAccess(TOKEN), host="0.0.0.0")
    assert get(with_token, "/status", {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_the_token_file(tmp_path, make_settings):
    path = tmp_path / "status-token"
    path.write_text(f"  {TOKEN}\n")
    assert StatusAccess.from_token_file(path).token == TOKEN
    assert StatusAccess.from_token_file(None).token is None
    path.write_text("\n")
    with pytest.raises(UserError, match="is empty"):
        StatusAccess.from_token_file(path)
    with pytest.raises(UserError, match="cannot be read"):
        StatusAccess.from_token_file(tmp_path / "missing")
    # serve: a token file that cannot be used leaves /status off, never open
    assert status_route(make_settings(status_token_file=path), sessionmaker()) is None


def test_serve_starts_the_page_with_its_token(tmp_path, make_settings, sqlite_db):
    """`echo-node serve`'s listener (node.serve.observe) carries /status with the token file's rule."""
    token_file = tmp_path / "status-token"
    token_file.write_text(TOKEN)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(http=f"127.0.0.1:{port}", status_token_file=token_file)
    server = start_observe(settings, sqlite_db.sessions, serves_model=False)
    assert server is not None
    try:
        assert get(server, "/status")[0] == 401
        assert get(server, f"/status?token={TOKEN}")[0] == 200
        assert get(server, "/healthz")[0] == 200
    finally:
        server.stop()


def test_a_token_in_the_query_never_reaches_the_log():
    line = f'"GET /status?refresh=1&token={TOKEN}&x=1 HTTP/1.1" 200 -'
    assert hide_token(line) == '"GET /status?refresh=1&token=***&x=1 HTTP/1.1" 200 -'
    assert hide_token(f"GET /status?token={TOKEN} HTTP/1.1") == "GET /status?token=*** HTTP/1.1"


# ---- in a browser ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (scripts/setup-dev.sh)")
def test_chromium_draws_the_page_of_a_seeded_node(tmp_path):
    """The screenshot script end to end: seeded database, ObserveServer, headless Chromium, PNG."""
    out = tmp_path / "status-page.png"
    result = subprocess.run(
        [sys.executable, REPOSITORY / "scripts" / "status-page-screenshot.py", "--out", out],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPOSITORY,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"status page screenshot: {out}")
    assert out.stat().st_size > 30_000
    with Image.open(out) as image:
        assert image.size == (1280, 1600)
        rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50  # text, badges, plots: not a blank page
    assert max(count for count, _ in colours) < 0.95 * 1280 * 1600  # a blank page is one colour
    ink = sum(count for count, colour in colours if sum(colour) < 3 * 110)
    assert ink > 0.01 * 1280 * 1600  # dark text and the header band: there is something to read
    assert sum(rgb.getpixel((10, 10))) < 3 * 60  # the dark header band: the stylesheet applied
    assert rgb.getpixel((640, 200)) != rgb.getpixel((10, 10))
