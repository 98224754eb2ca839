"""The `echo-node ready:` line for the setups an operator meets: what it names, and nothing secret."""

from __future__ import annotations

from types import SimpleNamespace

from node.config.settings import load_settings
from node.serve.ready import ready_line
from node.store.database import Database
from node.store.models import ModelVersion
from node.store.states import ModelRole


def started(database: Database, *, hl7_port: int | None = None, http_port: int | None = None, **settings):
    """What `ready_line` reads of a started Node: its settings, bind address, database and listeners."""
    return SimpleNamespace(
        settings=load_settings(**settings),
        bind_address="0.0.0.0",
        database=database,
        hl7=SimpleNamespace(port=hl7_port) if hl7_port is not None else None,
        http=SimpleNamespace(port=http_port) if http_port is not None else None,
    )


def test_the_embedded_default(sqlite_db: Database, tmp_path) -> None:
    node = started(sqlite_db, http_port=8088, data_dir=tmp_path)
    assert ready_line(node) == (
        f"echo-node ready: DICOM ECHO@0.0.0.0:11112, HL7 off, HTTP 127.0.0.1:8088, "
        f"model {bundled_version()} (demo), database sqlite, broker embedded"
    )


def test_a_production_node_with_tls_hl7_and_a_promoted_model(sqlite_db: Database, tmp_path) -> None:
    with sqlite_db.sessions.begin() as session:
        session.add(
            ModelVersion(
                name="site-student",
                version="0123456789abcdef",
                path="/m",
                sha256="0" * 64,
                block_size=8,
                role=ModelRole.SERVING,
            )
        )
    for name in ("node.crt", "node.key", "hl7.crt", "hl7.key"):
        (tmp_path / name).write_text("settings check that the file exists; nothing is opened here")
    node = started(
        sqlite_db,
        hl7_port=2575,
        data_dir=tmp_path,
        ae_title="ECHO_NODE",
        port=104,
        database_url="postgresql+psycopg://echo:s3cret@db.hospital.local:5432/echo",
        broker_url="redis://:s3cret@queue.hospital.local:6379/0",
        tls_cert=tmp_path / "node.crt",
        tls_key=tmp_path / "node.key",
        hl7_listen="0.0.0.0:2575",
        hl7_tls_cert=tmp_path / "hl7.crt",
        hl7_tls_key=tmp_path / "hl7.key",
        http="off",
    )
    line = ready_line(node)
    assert line == (
        "echo-node ready: DICOM ECHO_NODE@0.0.0.0:104 TLS, HL7 0.0.0.0:2575 TLS, HTTP off, "
        "model 0123456789abcdef, database postgresql, broker redis"
    )
    assert "s3cret" not in line and "hospital.local" not in line


def test_a_monitoring_port_that_was_taken_is_said(sqlite_db: Database, tmp_path) -> None:
    node = started(sqlite_db, data_dir=tmp_path, http="127.0.0.1:8088")  # start_observe logged the error
    assert ", HTTP 127.0.0.1:8088 not listening (see the error above)," in ready_line(node)


def test_an_unreadable_model_directory_is_said(sqlite_db: Database, tmp_path) -> None:
    node = started(sqlite_db, data_dir=tmp_path, model_dir=tmp_path / "no-model")
    assert ", model unreadable (see ECHO_MODEL_DIR)," in ready_line(node)


def bundled_version() -> str:
    from node.config.demo_model import demo_model_version

    version = demo_model_version()
    assert version is not None
    return version
