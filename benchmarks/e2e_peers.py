"""benchmarks/e2e.py's peers of the node: the modality that sends studies and the RIS that ACKs the ORUs."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import hl7
import hl7.mllp
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from rich.console import Console
from rich.progress import Progress

CALLING_AE = "BENCH"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class AckClock:
    """python-hl7's asyncio MLLP server: answers AA and notes when each accession's ACK went out."""

    port: int = 0
    acked: dict[str, float] = field(default_factory=dict)  # accession -> time.time() of the ACK
    _loop: asyncio.AbstractEventLoop | None = None

    async def _client(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                writer.writemessage(message.create_ack("AA"))
                await writer.drain()
                self.acked.setdefault(str(message.segment("OBR")[18]), time.time())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(
                hl7.mllp.start_hl7_server(self._client, "127.0.0.1", 0, encoding="utf-8")
            )
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)


def send_study(files: list[Path], port: int) -> None:
    """One association with every file of the study; returns when it is released."""
    ae = AE(ae_title=CALLING_AE)
    datasets = [dcmread(path) for path in files]
    for dataset in datasets:
        ae.add_requested_context(dataset.SOPClassUID, [str(dataset.file_meta.TransferSyntaxUID)])
    association = ae.associate("127.0.0.1", port, ae_title="ECHO")
    if not association.is_established:
        raise SystemExit(f"the node on port {port} refused the association")
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            if status.get("Status") != 0x0000:
                raise SystemExit(f"the node answered C-STORE status {status.get('Status')}")
    finally:
        association.release()


def wait_for_node(port: int, processes: list[subprocess.Popen[bytes]], timeout_s: float = 90) -> None:
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(Verification)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"a node process exited with status {process.returncode}; see its log")
        association = ae.associate("127.0.0.1", port, ae_title="ECHO")
        if association.is_established:
            association.release()
            return
        time.sleep(0.3)
    raise SystemExit(f"the node did not answer C-ECHO on port {port} within {timeout_s} s")


def wait_for_acks(
    ris: AckClock, accessions: list[str], timeout_s: float, what: str, console: Console
) -> None:
    deadline = time.monotonic() + timeout_s
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"waiting for the RIS ACKs ({what})", total=len(accessions))
        while True:
            done = sum(accession in ris.acked for accession in accessions)
            progress.update(task, completed=done)
            if done == len(accessions):
                return
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{what}: only {done} of {len(accessions)} ORUs reached the RIS in {timeout_s} s"
                )
            time.sleep(0.01)
