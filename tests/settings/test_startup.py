"""Start-up checks (issue 15 #10, #12): `echo-node serve` and `echo-worker` stop at once, with one
line naming the variable or the TOML key, when a setting cannot work; a service that does not
answer exits 3 (worth a restart), a wrong setting 2. A production node names its callers."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from echo.errors import UserError
from node.config.settings import SettingsError, load_settings, setting_name
from node.config.startup import (
    ServiceUnreachable,
    check_allow_list,
    check_broker,
    check_database,
    check_model_dir,
    check_serve,
)

REPOSITORY = Path(__file__).resolve().parents[2]
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/11"
NOWHERE = "127.0.0.1:1"  # nothing listens on port 1


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("ECHO_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ECHO_DATA_DIR", str(tmp_path / "data"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_role(module: str, *args: str, env: dict[str, str], timeout_s: float = 30) -> tuple[int, list[str]]:
    """A role's CLI as a subprocess: its exit code and the non-blank lines of its stderr."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ECHO_")}
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPOSITORY,
        env={**clean, "ECHO_PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()]


# --- settings that cannot be parsed ------------------------------------------------------------------


def test_a_database_url_that_does_not_parse_is_a_setting_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHO_DATABASE_URL", "nonsense")
    with pytest.raises(SettingsError, match="^bad setting ECHO_DATABASE_URL: not a SQLAlchemy URL"):
        load_settings()


def test_a_database_url_error_never_repeats_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHO_DATABASE_URL", "postgresql://echo:hunter2@db:notaport/echo")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value) and "ECHO_DATABASE_URL" in str(caught.value)


def test_a_broker_url_without_a_transport_is_a_setting_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHO_BROKER_URL", "queue.hospital.local")
    with pytest.raises(SettingsError, match="^bad setting ECHO_BROKER_URL: not a broker URL"):
        load_settings()


def test_a_bad_value_from_the_toml_file_names_the_key_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "echo.toml"
    config.write_text("port = 0\n")
    with pytest.raises(SettingsError, match=f"^bad setting port in {config}: "):
        load_settings(config)
    assert setting_name("port", config) == f"port in {config}"
    assert setting_name("ae_title", config) == "ECHO_AE_TITLE"


def test_a_check_across_settings_does_not_name_a_variable_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ECHO_TLS_KEY", str(tmp_path))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "ECHO_SETTINGS" not in str(caught.value) and "tls_cert and tls_key" in str(caught.value)


def test_the_database_password_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "postgres_password"
    secret.write_text("s3cret/with@odd:chars\n")
    monkeypatch.setenv("ECHO_DATABASE_URL", "postgresql+psycopg://echo@db:5432/echo")
    monkeypatch.setenv("ECHO_DATABASE_PASSWORD_FILE", str(secret))
    from sqlalchemy import make_url

    url = make_url(load_settings().effective_database_url)
    assert (url.username, url.password, url.host, url.database) == (
        "echo",
        "s3cret/with@odd:chars",
        "db",
        "echo",
    )
    monkeypatch.setenv("ECHO_DATABASE_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match="ECHO_DATABASE_PASSWORD_FILE: .* does not exist"):
        load_settings()


# --- the checks, one by one ------------------------------------------------------------------------


def test_a_missing_model_dir_names_the_variable_or_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECHO_MODEL_DIR", "/nonexistent/model")
    with pytest.raises(
        UserError, match="^bad setting ECHO_MODEL_DIR: model directory /nonexistent/model does not"
    ):
        check_model_dir(load_settings())
    monkeypatch.delenv("ECHO_MODEL_DIR")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    config = tmp_path / "echo.toml"
    config.write_text(f'model_dir = "{empty}"\n')
    with pytest.raises(UserError, match=f"^bad setting model_dir in {config}: .*no manifest.json"):
        check_model_dir(load_settings(config), config)


def test_the_bundled_model_passes_the_model_check() -> None:
    check_model_dir(load_settings())


def test_database_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    check_database(load_settings())  # the SQLite default: the node creates it
    check_database(load_settings(database_url=POSTGRES))
    with pytest.raises(
        UserError,
        match="^bad setting ECHO_DATABASE_URL: no SQLAlchemy dialect or driver 'postgresql\\+nosuch'",
    ):
        check_database(load_settings(database_url="postgresql+nosuch://echo@db/echo"))
    with pytest.raises(
        UserError, match="^bad setting ECHO_DATABASE_URL: the driver for 'mysql' is not installed"
    ):
        check_database(load_settings(database_url="mysql://echo@db/echo"))
    monkeypatch.setenv("ECHO_DATABASE_URL", f"postgresql+psycopg://echo:hunter2@{NOWHERE}/echo")
    with pytest.raises(ServiceUnreachable) as caught:
        check_database(load_settings(), timeout_s=1)
    message = str(caught.value)
    assert message.startswith(
        f"ECHO_DATABASE_URL: cannot connect to the database at postgresql+psycopg://echo:***@{NOWHERE}/echo:"
    )
    assert "hunter2" not in message and "\n" not in message


def test_broker_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    check_broker(load_settings())  # embedded: nothing to reach
    check_broker(load_settings(broker_url=REDIS))
    with pytest.raises(UserError, match="^bad setting ECHO_BROKER_URL: No such transport: nonsense"):
        check_broker(load_settings(broker_url="nonsense://queue"))
    monkeypatch.setenv("ECHO_BROKER_URL", f"redis://:hunter2@{NOWHERE}/0")
    with pytest.raises(ServiceUnreachable) as caught:
        check_broker(load_settings(), timeout_s=1)
    message = str(caught.value)
    assert message.startswith(f"ECHO_BROKER_URL: the broker at redis://:**@{NOWHERE}/0 does not answer:")
    assert "hunter2" not in message and "\n" not in message


# --- #10: a production node names its callers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"ECHO_BROKER_URL": REDIS}, "ECHO_BROKER_URL names an external broker"),
        ({"ECHO_DATABASE_URL": POSTGRES}, "ECHO_DATABASE_URL names an external database"),
        ({"ECHO_PRODUCTION": "true"}, "ECHO_PRODUCTION is true"),
    ],
)
def test_a_production_node_refuses_an_empty_allow_list(
    env: dict[str, str], reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError) as caught:
        check_allow_list(load_settings())
    assert str(caught.value) == (
        f"ECHO_ALLOWED_CALLERS is empty and this is a production node ({reason}): list the calling AE titles "
        "(AET or AET@host, comma-separated), or set ECHO_ALLOW_ANY_CALLER=true to accept any"
    )
    monkeypatch.setenv("ECHO_ALLOW_ANY_CALLER", "true")
    check_allow_list(load_settings())
    monkeypatch.delenv("ECHO_ALLOW_ANY_CALLER")
    monkeypatch.setenv("ECHO_ALLOWED_CALLERS", "PACS@10.0.10.5")
    check_allow_list(load_settings())


def test_the_embedded_default_still_accepts_any_caller_and_says_it_serves_the_demo_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings()
    assert settings.production_reason is None
    with caplog.at_level(logging.WARNING, logger="node.config.startup"):
        check_serve(settings)
    assert any(
        "this node serves the bundled DEMO model" in record.getMessage()
        and "not for clinical use" in record.getMessage()
        for record in caplog.records
    )


# --- the entry points: one line, exit 2 (setting) or 3 (a service that does not answer) --------------------


@pytest.mark.parametrize(
    ("env", "code", "line"),
    [
        (
            {"ECHO_DATABASE_URL": "nonsense"},
            2,
            "echo-node: error: bad setting ECHO_DATABASE_URL: not a SQLAlchemy URL",
        ),
        (
            {"ECHO_MODEL_DIR": "/nonexistent/model"},
            2,
            "echo-node: error: bad setting ECHO_MODEL_DIR: model directory /nonexistent/model does not exist",
        ),
        (
            {"ECHO_BROKER_URL": REDIS},
            2,
            "echo-node: error: ECHO_ALLOWED_CALLERS is empty and this is a production node",
        ),
        (
            {"ECHO_BROKER_URL": f"redis://{NOWHERE}/0", "ECHO_ALLOWED_CALLERS": "PACS"},
            3,
            f"echo-node: error: ECHO_BROKER_URL: the broker at redis://{NOWHERE}/0 does not answer",
        ),
    ],
)
def test_serve_stops_at_once_with_one_line(env: dict[str, str], code: int, line: str) -> None:
    returncode, stderr = run_role("node.serve.cli", "serve", env=env)
    assert returncode == code, stderr
    assert len(stderr) == 1 and stderr[0].startswith(line), stderr


def test_the_worker_stops_at_once_with_one_line_on_a_missing_model(tmp_path: Path) -> None:
    returncode, stderr = run_role("worker.cli", env={"ECHO_MODEL_DIR": str(tmp_path / "absent")})
    assert returncode == 2, stderr
    assert stderr == [
        f"echo-worker: error: bad setting ECHO_MODEL_DIR: model directory {tmp_path / 'absent'} does not exist"
    ]
