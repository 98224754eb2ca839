"""The front door under stress and abuse, against a real `echo-node serve` (embedded): many senders
at once, an association aborted mid-transfer, a disk that fills, PHI that must stay out of logs and
broker payloads, and TLS that a plain client cannot get around."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts
from sqlalchemy import func, select

from node.config.settings import load_settings
from node.store.database import Database, open_database
from node.store.models import Instance, Study
from tests.e2e.conftest import REPOSITORY
from tests.faults.site import Ledger, StudyStates, chest_study, send, settle

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@dataclass
class Node(StudyStates):
    port: int
    data_dir: Path
    database: Database
    log: object  # the serve process's Launched
    logs: object

    def instances(self, study_uids) -> int:
        with self.database.sessions() as session:
            return session.scalar(
                select(func.count(Instance.id))
                .join(Study, Study.id == Instance.study_id)
                .where(Study.study_instance_uid.in_(list(study_uids)))
            )


def _start(launch, name, data_dir, port, env_extra, pacs, ris, model_dir, environment, dcmtk, wait) -> Node:
    env = environment(data_dir, port, model_dir, pacs=pacs.address, ris=ris.address)
    env.update(env_extra)
    launched = launch(name, ["-m", "node.serve.cli", "serve"], env)
    echo = ("/usr/bin/echoscu", "-aet", "ECHODEMO", "-aec", "ECHO", "127.0.0.1", str(port))
    wait(lambda: dcmtk(*echo).returncode == 0, 90, f"the node {name}", launch.logs)
    return Node(port, data_dir, open_database(load_settings(data_dir=data_dir)), launched, launch.logs)


@pytest.fixture(scope="module")
def node(
    tmp_path_factory, launch, _module_pacs, _module_ris, model_dir, environment, free_ports, dcmtk, wait
):
    data_dir = tmp_path_factory.mktemp("ingest-faults")
    started = _start(
        launch,
        "serve",
        data_dir,
        free_ports(),
        {"ECHO_MAX_ASSOCIATIONS": "25"},
        _module_pacs,
        _module_ris,
        model_dir,
        environment,
        dcmtk,
        wait,
    )
    yield started
    started.database.dispose()


def _settle(node: Node, ledger: Ledger, pacs, ris, wait, timeout_s: float = 120):
    return settle(node, ledger, pacs, ris, wait, node.logs, timeout_s)


def small_series(study: Dataset, count: int) -> list[Dataset]:
    """`count` instances of `study`'s series (the same image, new SOP Instance UIDs)."""
    copies = []
    for number in range(1, count + 1):
        copy = deepcopy(study)
        copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        copy.InstanceNumber = number
        copies.append(copy)
    return copies


def test_twenty_senders_at_once_lose_nothing(node: Node, pacs, ris, wait, tmp_path: Path) -> None:
    """Twenty DCMTK storescu processes at once, 50 instances each. Not twenty pynetdicom associations in
    one process: there pynetdicom's own SCU now and then loses a response that comes back within a
    millisecond (its reactor thread takes the message off the queue between the pause check and the
    pause of its send_c_store), a fault of the sender, not of the node."""
    ledger = Ledger("20 associations x 50 instances")
    studies = [chest_study("CONC") for _ in range(20)]
    folders = []
    for number, study in enumerate(studies):
        folder = tmp_path / f"sender-{number}"
        folder.mkdir()
        for index, instance in enumerate(small_series(study, 50)):
            instance.save_as(folder / f"{index:02d}.dcm", enforce_file_format=True)
        folders.append(folder)
    senders = [
        subprocess.Popen(
            [
                "/usr/bin/storescu",
                "-aet",
                "STORESCU",
                "-aec",
                "ECHO",
                "-R",
                "+sd",
                "127.0.0.1",
                str(node.port),
                str(f),
            ],
            env={**os.environ, "TCP_NODELAY": "1"},  # DCMTK waits for delayed ACKs without it
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for f in folders
    ]
    outcomes = [(sender.communicate(timeout=120)[1], sender.returncode) for sender in senders]
    failures = [stderr.decode()[-300:] for stderr, code in outcomes if code != 0]
    assert failures == [], failures
    for study in studies:
        ledger.sent_ok(study)
    row = _settle(node, ledger, pacs, ris, wait, timeout_s=180)
    assert node.instances(ledger.sent) == 1000
    assert (row.sent, row.rows, row.sr, row.oru, row.lost, row.duplicated) == (20, 20, 20, 20, 0, 0)


def test_an_association_aborted_mid_transfer_leaves_nothing_half_done(node: Node, pacs, ris, wait) -> None:
    ledger = Ledger("association aborted mid-transfer")
    study = chest_study("ABRT")
    big = deepcopy(study)
    big.SOPInstanceUID = big.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    big.Rows, big.Columns = 4000, 4000  # 32 MB of pixels: long enough to abort in the middle
    big.PixelData = bytes(4000 * 4000 * 2)
    ae = AE(ae_title="STORESCU")
    ae.requested_contexts = StoragePresentationContexts[:120]
    association = ae.associate("127.0.0.1", node.port, ae_title="ECHO")
    assert association.is_established
    transport = association.dul.socket
    raw, unpaced = transport.socket, transport.send

    def paced(data: bytes) -> None:  # a slow link: the abort lands in the middle of the data set
        for start in range(0, len(data), 16384):
            time.sleep(0.001)
            unpaced(data[start : start + 16384])

    transport.send = paced
    sender = threading.Thread(target=lambda: association.send_c_store(big), daemon=True)
    sender.start()
    time.sleep(1.0)
    assert sender.is_alive(), "the data set went through before the connection dropped"
    raw.shutdown(socket.SHUT_RDWR)  # the link drops in the middle of the data set's PDUs
    sender.join(30)
    association.abort()

    assert node.states([str(study.StudyInstanceUID)]) == {}, "nothing recorded of the aborted study"
    spool = node.data_dir / "spool"
    leftovers = [path for path in spool.rglob("*") if path.is_file() and not path.name.endswith(".dcm")]
    assert leftovers == [], f"temporary files left in the spool: {leftovers}"

    assert send(node.port, [study]) == [0], "the node still takes the study afterwards"
    ledger.sent_ok(study)
    row = _settle(node, ledger, pacs, ris, wait)
    assert (row.sent, row.rows, row.sr, row.oru, row.lost, row.duplicated) == (1, 1, 1, 1, 0, 0)


def test_phi_never_reaches_a_log_line_or_a_broker_payload(node: Node, pacs, ris, wait) -> None:
    ledger = Ledger("PHI canary")
    name, patient_id = "Canarybird^Tweety", "CANARY-7731-PID"
    study = chest_study("PHIC", patient_name=name, patient_id=patient_id)
    assert send(node.port, [study]) == [0]
    ledger.sent_ok(study)
    row = _settle(node, ledger, pacs, ris, wait)
    assert (row.lost, row.duplicated) == (0, 0)

    logs = node.log.output()
    for canary in ("Canarybird", "Tweety", patient_id, str(study.AccessionNumber)):
        assert canary not in logs, f"{canary!r} appeared in the node's log"
    with contextlib.closing(sqlite3.connect(node.data_dir / "broker.db")) as broker:
        tables = [name for (name,) in broker.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        payloads = []
        for table in tables:
            payloads += [repr(row) for row in broker.execute(f'SELECT * FROM "{table}"')]  # noqa: S608
    assert payloads, "the broker's tables were read"
    for canary in ("Canarybird", patient_id, str(study.AccessionNumber)):
        assert not any(canary in payload for payload in payloads), f"{canary!r} is in a broker payload"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("guard_mb", ["1", "0"], ids=["free-disk guard", "disk really full"])
def test_a_disk_that_fills_refuses_what_it_cannot_keep_and_loses_nothing(
    guard_mb: str, small_disk: Path, launch, pacs, ris, model_dir, environment, free_ports, dcmtk, wait
) -> None:
    ledger = Ledger(f"disk fills up (ECHO_MIN_FREE_MB={guard_mb})")
    node = _start(
        launch,
        "serve-small-disk",
        small_disk,
        free_ports(),
        {"ECHO_MIN_FREE_MB": guard_mb},  # 0: no guard, the writes themselves meet ENOSPC
        pacs,
        ris,
        model_dir,
        environment,
        dcmtk,
        wait,
    )
    try:
        ballast = small_disk / "ballast"
        free = int(
            subprocess.run(
                ["df", "--output=avail", "-B1", str(small_disk)], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
        ballast.write_bytes(bytes(max(free - 64 * 1024, 0)))  # leave 64 KB: one image (190 KB) does not fit
        studies = [chest_study("DISK") for _ in range(3)]
        refused = [send(node.port, [study])[0] for study in studies]
        assert all(status != 0 for status in refused), f"stored on a full disk? {refused}"
        # out of resources (0xA7xx), or the association itself refused (-1) when not even its row fits
        assert all(status >> 8 == 0xA7 or status == -1 for status in refused), refused
        ballast.unlink()
        for study in studies:
            assert send(node.port, [study]) == [0], node.logs()
            ledger.sent_ok(study)
        row = _settle(node, ledger, pacs, ris, wait)
        assert (row.sent, row.rows, row.sr, row.oru, row.lost, row.duplicated) == (3, 3, 3, 3, 0, 0)
    finally:
        launch.stop_all()
        node.database.dispose()


def test_a_tls_node_refuses_a_plain_client_and_serves_a_tls_one(
    tmp_path: Path, launch, pacs, ris, model_dir, environment, free_ports, dcmtk, wait
) -> None:
    cert, key = tmp_path / "node.crt", tmp_path / "node.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    port = free_ports()
    env = environment(tmp_path / "tls-node", port, model_dir, pacs=pacs.address, ris=ris.address)
    env.update({"ECHO_TLS_CERT": str(cert), "ECHO_TLS_KEY": str(key)})
    launch("serve-tls", ["-m", "node.serve.cli", "serve"], env)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))

    def tls_echo() -> bool:
        ae = AE(ae_title="ECHODEMO")
        ae.add_requested_context("1.2.840.10008.1.1")
        association = ae.associate("127.0.0.1", port, ae_title="ECHO", tls_args=(client, "127.0.0.1"))
        if not association.is_established:
            return False
        association.release()
        return True

    try:
        wait(tls_echo, 90, "the TLS node", launch.logs)
        plain = dcmtk(
            "/usr/bin/echoscu", "-to", "5", "-aet", "ECHODEMO", "-aec", "ECHO", "127.0.0.1", str(port)
        )
        assert plain.returncode != 0, "a plain client got through a TLS port"
        assert tls_echo(), "a TLS client is still served after the plain one"
    finally:
        launch.stop_all()


@contextlib.contextmanager
def _serve_in_own_group(name: str, env: dict[str, str], log: Path, port: int, dcmtk, wait) -> Iterator[int]:
    """`echo-node serve` in a session of its own (SIGKILL of the group takes its worker too); its pid."""
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "node.serve.cli", "serve"],
            cwd=REPOSITORY,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    echo = ("/usr/bin/echoscu", "-to", "5", "-aet", "ECHODEMO", "-aec", "ECHO", "127.0.0.1", str(port))
    try:
        wait(lambda: dcmtk(*echo).returncode == 0, 90, f"the node {name}", lambda: log.read_text())
        yield process.pid
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def _stored(database: Database, study_uid: str) -> list[str]:
    with database.sessions() as session:
        return list(
            session.scalars(
                select(Instance.path)
                .join(Study, Study.id == Instance.study_id)
                .where(Study.study_instance_uid == study_uid)
            )
        )


def _take_rows(database: Database, study_uid: str) -> None:
    """What a power cut does to a commit the ingest writer made without fsync (node.dicom.writer)."""
    with database.engine.begin() as connection:
        [study_id] = connection.execute(
            select(Study.id).where(Study.study_instance_uid == study_uid)
        ).scalars()
        for table in ("instances", "study_events"):
            connection.exec_driver_sql(f"DELETE FROM {table} WHERE study_id = ?", (study_id,))  # noqa: S608
        connection.exec_driver_sql("DELETE FROM studies WHERE id = ?", (study_id,))


def test_an_instance_answered_stored_survives_kill_9_and_a_lost_commit(
    tmp_path: Path, pacs, ris, model_dir, environment, free_ports, dcmtk, wait
) -> None:
    """kill -9 of the serve process (and its worker) right after two C-STORE successes, the association
    still open; the second instance's commit is then taken away too, as a power cut can take it. After
    the restart both files are there and in the database (the spool re-scan restored the second), and
    both studies are drafted and delivered once."""
    ledger = Ledger("kill -9 right after success, last commit lost")
    data_dir, port = tmp_path / "node", free_ports()
    env = environment(data_dir, port, model_dir, pacs=pacs.address, ris=ris.address)
    log = tmp_path / "serve.log"
    kept, lost = chest_study("KILL"), chest_study("KILL")
    with _serve_in_own_group("serve", env, log, port, dcmtk, wait) as pid:
        ae = AE(ae_title="STORESCU")
        ae.requested_contexts = StoragePresentationContexts[:120]
        association = ae.associate("127.0.0.1", port, ae_title="ECHO")
        assert association.is_established
        statuses = [int(association.send_c_store(study).Status) for study in (kept, lost)]
        os.killpg(pid, signal.SIGKILL)
        association.abort()
    assert statuses == [0, 0]
    for study in (kept, lost):
        ledger.sent_ok(study)
    database = open_database(load_settings(data_dir=data_dir))
    try:
        paths = {
            uid: _stored(database, uid) for uid in (str(kept.StudyInstanceUID), str(lost.StudyInstanceUID))
        }
        assert all(len(found) == 1 and Path(found[0]).is_file() for found in paths.values()), paths
        _take_rows(database, str(lost.StudyInstanceUID))
        env = environment(data_dir, port, model_dir, pacs=pacs.address, ris=ris.address)
        with _serve_in_own_group("serve again", env, log, port, dcmtk, wait):
            assert {uid: _stored(database, uid) for uid in paths} == paths  # both files, both rows
            assert all(Path(found[0]).is_file() for found in paths.values())
            assert "spool re-scan: 1 instances restored" in log.read_text()
            site = Node(port, data_dir, database, None, lambda: log.read_text())
            row = _settle(site, ledger, pacs, ris, wait)
        assert (row.sent, row.rows, row.sr, row.oru, row.lost, row.duplicated) == (2, 2, 2, 2, 0, 0)
    finally:
        database.dispose()
