"""Fixtures for the exporters: source images, a model, a study, and real peers on loopback.

The peers are what a site runs, reduced to what the tests steer: a pynetdicom storage SCP answering
chosen C-STORE statuses (the PACS), a threaded MLLP server answering chosen bytes (the RIS), raw
TCP listeners that accept and then stay silent or abort, and a self-signed certificate for TLS.
"""

from __future__ import annotations

import io
import socket
import socketserver
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import hl7
import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, StoragePresentationContexts, build_context, evt
from pynetdicom.presentation import PresentationContext

from exporters.identity import ModelIdentity, StudyInfo

# --- source data -------------------------------------------------------------------------------


def build_image(**overrides: object) -> Dataset:
    """A small but complete DX 'for presentation' chest image with an order (accession, RP ID)."""
    image = Dataset()
    image.file_meta = FileMetaDataset()
    image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    image.SOPClassUID = DigitalXRayImageStorageForPresentation
    image.SOPInstanceUID = generate_uid()
    image.StudyInstanceUID = generate_uid()
    image.SeriesInstanceUID = generate_uid()
    image.PatientName = "Doe^Jane"
    image.PatientID = "MRN0042"
    image.PatientBirthDate = "19700101"
    image.PatientSex = "F"
    image.AccessionNumber = "ACC0042"
    image.StudyID = "S42"
    image.StudyDate = "20250102"
    image.StudyTime = "030405"
    image.StudyDescription = "XR CHEST PA"
    image.ReferringPhysicianName = "Who^Doctor"
    image.Modality = "DX"
    image.ViewPosition = "PA"
    request = Dataset()
    request.RequestedProcedureID = "RP42"
    request.ScheduledProcedureStepID = "SPS42"
    image.RequestAttributesSequence = [request]
    image.Rows = image.Columns = 8
    image.SamplesPerPixel = 1
    image.PhotometricInterpretation = "MONOCHROME2"
    image.BitsAllocated, image.BitsStored, image.HighBit, image.PixelRepresentation = 16, 12, 11, 0
    image.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    for keyword, value in overrides.items():
        if value is None:
            delattr(image, keyword)
        else:
            setattr(image, keyword, value)
    return image


@pytest.fixture
def make_image() -> Callable[..., Dataset]:
    """The image factory: keyword overrides set attributes, None removes one."""
    return build_image


def received_image(**values: object) -> Dataset:
    """An image as the node reads it back from its spool: written to bytes and read again, with
    values its VR does not allow kept as they came (pydicom warns, the modality sent them anyway)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = build_image(**values)
        buffer = io.BytesIO()
        image.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        again = dcmread(buffer)
        for element in again:  # decode every value now, while warnings are ignored
            _ = element.value
    return again


@pytest.fixture
def make_received_image() -> Callable[..., Dataset]:
    """received_image: keyword values, including invalid ones, in an image read back from bytes."""
    return received_image


@pytest.fixture
def image() -> Dataset:
    return build_image()


@pytest.fixture
def model() -> ModelIdentity:
    return ModelIdentity(name="echo-student", version="1.2.0", manufacturer="ECHO Project")


@pytest.fixture
def study() -> StudyInfo:
    return StudyInfo(
        patient_id="MRN0042",
        patient_name="Doe^Jane",
        birth_date="19700101",
        sex="F",
        accession_number="ACC0042",
        study_instance_uid="1.2.826.0.1.3680043.8.498.1",
        observation_datetime=datetime(2025, 1, 2, 3, 4, 5),
        placer_order_number="PL-7",
        filler_order_number="FI-7",
        procedure_code="36554-4",
        procedure_coding_scheme="LN",
        procedure_description="XR Chest PA",
    )


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound, read, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- PACS: pynetdicom storage SCP --------------------------------------------------------------


@dataclass
class FakePacs:
    """A storage SCP answering `statuses` in turn (the last one repeats), recording what it got."""

    ae_title: str
    host: str
    port: int
    statuses: list[int] = field(default_factory=lambda: [0x0000])
    received: list[Dataset] = field(default_factory=list)
    associations: int = 0
    abort_on: int | None = None  # abort the association when this many datasets have arrived

    def on_store(self, event: evt.Event) -> int:
        self.received.append(event.dataset)
        if len(self.received) == self.abort_on:
            event.assoc.abort()
        index = min(len(self.received), len(self.statuses)) - 1
        return self.statuses[index]

    def on_established(self, event: evt.Event) -> None:
        self.associations += 1


def _start_pacs(
    contexts: list[PresentationContext] = StoragePresentationContexts,
    ssl_context: ssl.SSLContext | None = None,
    **ae_settings: object,
) -> tuple[FakePacs, Callable[[], None]]:
    ae = AE(ae_title="PACS")
    ae.supported_contexts = contexts
    for name, value in ae_settings.items():
        setattr(ae, name, value)
    pacs = FakePacs(ae_title="PACS", host="127.0.0.1", port=0)
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, pacs.on_store), (evt.EVT_ESTABLISHED, pacs.on_established)],
        ssl_context=ssl_context,
    )
    pacs.port = server.server_address[1]
    return pacs, server.shutdown


@pytest.fixture(scope="module")
def _shared_pacs() -> Iterator[FakePacs]:
    fake, stop = _start_pacs()
    yield fake
    stop()


@pytest.fixture
def pacs(_shared_pacs: FakePacs) -> FakePacs:
    """A PACS answering success, fresh for each test (one server per module: shutdown is slow)."""
    _shared_pacs.statuses, _shared_pacs.received, _shared_pacs.associations = [0x0000], [], 0
    _shared_pacs.abort_on = None
    return _shared_pacs


@pytest.fixture
def picky_pacs() -> Iterator[FakePacs]:
    """A PACS that only knows the calling AE 'KNOWN': anyone else is rejected (permanent)."""
    fake, stop = _start_pacs(require_calling_aet=["KNOWN"])
    yield fake
    stop()


@pytest.fixture
def ct_only_pacs() -> Iterator[FakePacs]:
    """A PACS that accepts only CT images, so no context for an SR or a DX image."""
    fake, stop = _start_pacs(contexts=[build_context(CTImageStorage)])
    yield fake
    stop()


# --- raw TCP peers ------------------------------------------------------------------------------


@dataclass
class RawPeer:
    """Accepts connections, waits for the first bytes, answers `reply` (or nothing) and holds on."""

    host: str
    port: int
    reply: bytes | None = None


@pytest.fixture
def raw_peer() -> Iterator[RawPeer]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    peer = RawPeer(host="127.0.0.1", port=listener.getsockname()[1])
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(connection)
            connection.settimeout(2)
            try:
                connection.recv(65536)
                if peer.reply is not None:
                    connection.sendall(peer.reply)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield peer
    stop.set()
    thread.join(timeout=2)
    for connection in held:
        connection.close()
    listener.close()


# --- RIS: threaded MLLP server ------------------------------------------------------------------

Responder = Callable[[hl7.Message], list[bytes] | None]


def build_ack(control_id: str, code: str, text: str = "", err: str | None = None) -> bytes:
    """An HL7 v2.5.1 ACK framed for MLLP, as a RIS would send it."""
    segments = [
        "MSH|^~\\&|RIS|HOSP|ECHO|HOSP|20250102030405||ACK^R01^ACK|ACK0001|P|2.5.1",
        f"MSA|{code}|{control_id}|{text}",
    ]
    if err is not None:
        segments.append(err)
    return b"\x0b" + "\r".join(segments).encode() + b"\r\x1c\r"


@pytest.fixture
def ack_message() -> Callable[..., bytes]:
    """build_ack: (control_id, MSA-1, MSA-3 text, an optional ERR segment) -> a framed ACK."""
    return build_ack


@dataclass
class FakeRis:
    """An MLLP listener: `respond` maps each parsed message to the byte chunks sent back (None: silence)."""

    host: str
    port: int
    respond: Responder
    received: list[hl7.Message] = field(default_factory=list)
    chunk_pause: float = 0.05  # between chunks, so the client sees them as separate reads
    hang_up: bool = False  # close right after the answer instead of waiting for the client


def _read_mllp_frame(connection: socket.socket) -> bytes | None:
    buffer = b""
    while b"\x1c\r" not in buffer:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    return buffer[buffer.index(b"\x0b") + 1 : buffer.index(b"\x1c\r")]


def _start_ris(tls: ssl.SSLContext | None = None) -> tuple[FakeRis, Callable[[], None]]:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            connection = self.request
            connection.settimeout(5)
            try:
                if tls is not None:
                    connection = tls.wrap_socket(connection, server_side=True)
                payload = _read_mllp_frame(connection)
                if payload is None:
                    return
                message = hl7.parse(payload.decode("utf-8"))
                ris.received.append(message)
                chunks = ris.respond(message)
                for chunk in chunks or []:
                    connection.sendall(chunk)
                    time.sleep(ris.chunk_pause)
                if ris.hang_up:
                    return
                while connection.recv(65536):  # hold the line until the client hangs up
                    pass
            except (OSError, ssl.SSLError):
                pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ris = FakeRis(host="127.0.0.1", port=server.server_address[1], respond=lambda message: None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return ris, stop


@pytest.fixture
def ris() -> Iterator[FakeRis]:
    fake, stop = _start_ris()
    yield fake
    stop()


# --- TLS ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed EC certificate for 127.0.0.1, made with the openssl command line."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(cert=cert, key=key)


@pytest.fixture
def tls_ris(certificate: Certificate) -> Iterator[FakeRis]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate.cert, certificate.key)
    fake, stop = _start_ris(tls=server_context)
    yield fake
    stop()


@pytest.fixture
def tls_pacs(certificate: Certificate) -> Iterator[FakePacs]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate.cert, certificate.key)
    fake, stop = _start_pacs(ssl_context=server_context)
    yield fake
    stop()
