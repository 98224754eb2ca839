"""The embedded default as an operator runs it: `echo-node serve` (SQLite, in-process worker child)
and `echo-node demo`, which sends the bundled study and prints the report that comes back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import highdicom as hd
import pytest
from sqlalchemy import select

from node.config.demo_model import is_demo_model_dir
from node.config.settings import load_settings
from node.store.database import open_database
from node.store.models import Delivery, Report, Study
from node.store.states import DeliveryStatus, StudyState

REPOSITORY = Path(__file__).resolve().parents[2]


def demo(env: dict[str, str], *args: str, timeout_s: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.serve.cli", "demo", *args],
        cwd=REPOSITORY,
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="module")
def embedded(
    tmp_path_factory, launch, _module_pacs, _module_ris, model_dir, environment, free_ports, dcmtk, wait
):
    """`echo-node serve` with everything embedded, sending to the test PACS and RIS."""
    port = free_ports()
    data_dir = tmp_path_factory.mktemp("embedded")
    env = environment(data_dir, port, model_dir, pacs=_module_pacs.address, ris=_module_ris.address)
    launch("serve", ["-m", "node.serve.cli", "serve"], env)
    echo = ("echoscu", "-aet", "ECHODEMO", "-aec", "ECHO", "127.0.0.1", str(port))
    wait(lambda: dcmtk(*echo).returncode == 0, 60, "the embedded node", launch.logs)
    return env


@pytest.mark.e2e
@pytest.mark.integration
def test_demo_prints_the_report_the_embedded_node_drafted_and_delivered(embedded, pacs, ris, launch) -> None:
    result = demo(embedded, "--timeout", "120")

    assert result.returncode == 0, result.stderr + launch.logs()
    database = open_database(load_settings(data_dir=Path(embedded["ECHO_DATA_DIR"])))
    try:
        with database.sessions() as session:
            study = session.scalars(select(Study)).one()
            report = session.scalars(select(Report)).one()
            statuses = {row.status for row in session.scalars(select(Delivery))}
    finally:
        database.dispose()
    assert study.accession_number.startswith("DEMO")
    assert study.state is StudyState.DELIVERED and statuses == {DeliveryStatus.DELIVERED}
    out = result.stdout
    assert f"sent the demo study (accession {study.accession_number}" in out
    panel = out[out.index("╭") : out.index("╯")]
    shown = " ".join(" ".join(line.strip("╭╮╰╯│─ ") for line in panel.splitlines()[1:]).split())
    stored = " ".join(f"FINDINGS: {report.findings or '-'} IMPRESSION: {report.impression or '-'}".split())
    assert shown == stored, "the report exactly as stored, markup-like text included"
    assert re.search(r"Draft report \(\S+ [0-9a-f]{16}\)", panel.splitlines()[0])
    assert "image read: instance 1: View Position PA" in out
    assert re.search(rf"SR\s+│\s+{re.escape(embedded['ECHO_PACS'])}\s+│\s+delivered\s+│\s+1\s+│\s+0000", out)
    assert re.search(rf"ORU\s+│\s+{re.escape(embedded['ECHO_RIS'])}\s+│\s+delivered\s+│\s+1\s+│\s+AA", out)
    assert re.search(r"study delivered after \d+\.\d s", out)
    serves_demo_model = is_demo_model_dir(Path(embedded["ECHO_MODEL_DIR"]))
    assert ("written by the bundled DEMO model" in out) == serves_demo_model
    assert ("this node serves the bundled DEMO model" in launch.logs()) == serves_demo_model
    assert re.search(rf"AIR\s+│\s+{re.escape(embedded['ECHO_PACS'])}\s+│\s+delivered\s+│\s+1\s+│\s+0000", out)
    assert len(pacs.received) == 1 and len(ris.received) == 1
    assert str(ris.received[0].segment("OBR")[18]) == study.accession_number
    # who wrote the draft: on the screen and in the ORU (OBX-17)
    assert f"decoding: {report.decoding}" in " ".join(out.split())
    assert f"DECODING^{report.decoding}^99ECHO" in str(ris.received[0])
    if serves_demo_model:  # its one-step draft of the demo study fails the gate: the teacher re-decodes
        assert report.gate == "redecoded" and " by teacher " in report.decoding
    [air] = pacs.air  # the AI Results SR beside the narrative one, in the same study
    assert air.StudyInstanceUID == pacs.received[0].StudyInstanceUID
    assert hd.sr.Comprehensive3DSR.from_dataset(air).VerificationFlag == "UNVERIFIED"


@pytest.mark.e2e
@pytest.mark.integration
def test_a_second_demo_run_is_a_new_study(embedded, pacs, ris) -> None:
    assert demo(embedded, "--timeout", "120").returncode == 0
    assert len(pacs.received) == len(pacs.air) == len(ris.received) == 1, "a new report, not the first again"


@pytest.mark.e2e
@pytest.mark.integration
def test_demo_with_a_calling_ae_the_node_refuses(embedded) -> None:
    result = demo(embedded, "--calling-ae", "STRANGER")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"echo-node: error: the node at ECHO@127.0.0.1:{embedded['ECHO_PORT']} rejected the association: is the "
        "calling AE STRANGER in ECHO_ALLOWED_CALLERS (or pass --calling-ae), and is the node's AE title right "
        "(--called-ae)?"
    ]


def test_demo_without_a_running_node_is_one_line(tmp_path: Path, free_ports) -> None:
    port = free_ports()
    result = demo({"ECHO_DATA_DIR": str(tmp_path)}, "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"echo-node: error: no DICOM node answers at ECHO@127.0.0.1:{port}: is `echo-node serve` running there?"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calling-ae", "A" * 17], "--calling-ae 'AAAAAAAAAAAAAAAAA' is not a DICOM AE title"),
        (["--timeout", "0"], "Invalid value for '--timeout'"),
    ],
)
def test_demo_refuses_bad_options(args: list[str], message: str, tmp_path: Path) -> None:
    result = demo({"ECHO_DATA_DIR": str(tmp_path)}, *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


# --- issue 15 #14: the demo's synthetic patient does not go to the hospital's PACS or RIS ---------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ECHO_PACS": "PACS@10.0.10.5:104"},
            "the node sends its drafts to PACS@10.0.10.5:104 (ECHO_PACS): the demo's synthetic patient and its "
            "draft would land there; pass --yes-send-to-production to send it anyway",
        ),
        (
            {"ECHO_RIS": "ris.hospital.local:2575", "ECHO_PACS": "PACS@127.0.0.1:10104"},
            "the node sends its drafts to ris.hospital.local:2575 (ECHO_RIS): the demo's",
        ),
        (
            {"ECHO_PACS": "PACS@127.0.0.1:10104", "ECHO_PRODUCTION": "true"},
            "the node sends its drafts to PACS@127.0.0.1:10104 (ECHO_PACS); this is a production node: "
            "ECHO_PRODUCTION is true: the demo's synthetic patient",
        ),
        (
            {"ECHO_FHIR": "https://fhir.hospital.local/fhir"},
            "the node sends its drafts to https://fhir.hospital.local/fhir (ECHO_FHIR): the demo's",
        ),
    ],
)
def test_demo_refuses_to_send_to_a_production_pacs_or_ris(
    env: dict[str, str], message: str, tmp_path: Path, free_ports
) -> None:
    result = demo({"ECHO_DATA_DIR": str(tmp_path), **env}, "--port", str(free_ports()))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"echo-node: error: {message}")


def test_demo_sends_to_a_production_pacs_when_told_to(tmp_path: Path, free_ports) -> None:
    port = free_ports()
    result = demo(
        {"ECHO_DATA_DIR": str(tmp_path), "ECHO_PACS": "PACS@10.0.10.5:104"},
        "--port",
        str(port),
        "--yes-send-to-production",
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"echo-node: error: no DICOM node answers at ECHO@127.0.0.1:{port}: is `echo-node serve` running there?"
    ]


@pytest.mark.e2e
@pytest.mark.integration
def test_the_running_node_answers_its_probes_and_counts_what_it_did(embedded, launch) -> None:
    """/healthz, /readyz and /metrics from the serve process itself, after a demo study."""
    assert demo(embedded, "--timeout", "120").returncode == 0, launch.logs()
    base = f"http://{embedded['ECHO_HTTP']}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:
        assert response.read() == b"ready\n", launch.logs()
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert re.search(r'^echo_studies\{state="delivered"\} [1-9]', metrics, re.MULTILINE), metrics
    assert re.search(r"^echo_instances_received_total [1-9]", metrics, re.MULTILINE)
    assert re.search(
        r'^echo_inference_seconds_count\{decoding="[^"]+",model_version="[^"]+"\} [1-9]',
        metrics,
        re.MULTILINE,
    )
    for kind in ("sr", "oru"):
        assert re.search(
            rf'^echo_deliveries\{{kind="{kind}",status="delivered"\}} [1-9]', metrics, re.MULTILINE
        )
    # the embedded worker's own figures, served by serve (the child opens no listener of its own)
    assert re.search(
        r'^echo_worker_tasks_total\{outcome="succeeded",task="echo.infer_study"\} [1-9]',
        metrics,
        re.MULTILINE,
    ), metrics
    assert re.search(
        r'^echo_worker_model_loaded\{model="[^"]+",provider="CPUExecutionProvider",version="[0-9a-f]{16}"\} 1\.0$',
        metrics,
        re.MULTILINE,
    ), metrics
    assert re.search(r'^echo_queue_messages\{queue="gpu"\} \d', metrics, re.MULTILINE)
    assert re.search(r"^echo_broker_up 1\.0$", metrics, re.MULTILINE)
    whole = "".join(item.output() for item in launch.running)  # logs() keeps only the tail
    assert whole.count("HTTP /metrics /healthz /readyz") == 1, "one listener in serve's process tree"
