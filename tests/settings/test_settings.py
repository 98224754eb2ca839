from pathlib import Path

import pytest

from node.config.settings import CallerRule, DicomPeer, MllpPeer, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("ECHO_"):
            monkeypatch.delenv(key)


def test_defaults_are_the_embedded_node(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.ae_title == "ECHO" and settings.port == 11112 and settings.quiet_seconds == 10
    assert settings.allowed_callers == () and settings.pacs is None and settings.ris is None
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'echo-data' / 'echo.db'}"
    assert settings.embedded_broker
    assert settings.effective_model_dir.name == "student-onnx"


def test_environment_names_from_the_design(monkeypatch):
    monkeypatch.setenv("ECHO_AE_TITLE", "DRAFTER")
    monkeypatch.setenv("ECHO_ALLOWED_CALLERS", "PACS1, MOD@10.1.2.3,")
    monkeypatch.setenv("ECHO_PACS", "ORTHANC@pacs.local:4242")
    monkeypatch.setenv("ECHO_RIS", "ris.local:2575")
    monkeypatch.setenv("ECHO_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("ECHO_QUIET_SECONDS", "2.5")
    settings = load_settings()
    assert settings.ae_title == "DRAFTER"
    assert settings.allowed_callers == (CallerRule("PACS1"), CallerRule("MOD", "10.1.2.3"))
    assert settings.pacs == DicomPeer("ORTHANC", "pacs.local", 4242)
    assert settings.ris == MllpPeer("ris.local", 2575)
    assert not settings.embedded_broker and settings.quiet_seconds == 2.5


def test_the_hl7_listener_settings(tmp_path, monkeypatch):
    assert load_settings().hl7_listen is None  # unset: no listener
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    monkeypatch.setenv("ECHO_HL7_LISTEN", "0.0.0.0:2575")
    monkeypatch.setenv("ECHO_HL7_ALLOWED_FACILITIES", " RADRIS, CARDIO-RIS ,")
    monkeypatch.setenv("ECHO_HL7_TLS_CERT", str(cert))
    monkeypatch.setenv("ECHO_HL7_TLS_KEY", str(key))
    settings = load_settings()
    assert settings.hl7_listen == MllpPeer("0.0.0.0", 2575)
    assert settings.hl7_allowed_facilities == ("RADRIS", "CARDIO-RIS")
    assert (settings.hl7_tls_cert, settings.hl7_tls_key) == (cert, key)
    monkeypatch.setenv("ECHO_HL7_TLS_KEY", str(tmp_path / "absent.pem"))
    with pytest.raises(SettingsError, match="absent.pem does not exist"):
        load_settings()
    monkeypatch.setenv("ECHO_HL7_TLS_CERT", "")  # an empty variable is unset, as for the DICOM TLS files
    monkeypatch.setenv("ECHO_HL7_TLS_KEY", "")
    assert load_settings().hl7_tls_cert is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, MllpPeer("127.0.0.1", 8088)),
        ("0.0.0.0:9100", MllpPeer("0.0.0.0", 9100)),
        ("off", None),
        ("", None),
    ],
)
def test_the_monitoring_listener_is_on_localhost_unless_told(value, expected, monkeypatch):
    if value is not None:
        monkeypatch.setenv("ECHO_HTTP", value)
    assert load_settings().http == expected


def test_a_bad_monitoring_address_names_the_variable(monkeypatch):
    monkeypatch.setenv("ECHO_HTTP", "8088")
    with pytest.raises(SettingsError, match="ECHO_HTTP.*HTTP listen address '8088' must be host:port"):
        load_settings()


def test_caller_rule_matches_host_when_pinned():
    assert CallerRule("MOD", "10.1.2.3").admits("MOD", "10.1.2.3")
    assert not CallerRule("MOD", "10.1.2.3").admits("MOD", "10.1.2.4")
    assert CallerRule("MOD").admits("MOD  ", "anywhere")
    assert not CallerRule("MOD").admits("OTHER", "anywhere")


def test_toml_file_with_environment_winning(tmp_path, monkeypatch):
    config = tmp_path / "echo.toml"
    config.write_text('ae_title = "FROMFILE"\nport = 104\nris = "ris:2575"\n')
    monkeypatch.setenv("ECHO_PORT", "11113")
    settings = load_settings(config)
    assert (settings.ae_title, settings.port, settings.ris) == ("FROMFILE", 11113, MllpPeer("ris", 2575))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ECHO_PORT", "eleven", "bad setting ECHO_PORT"),
        ("ECHO_PORT", "70000", "less than or equal to 65535"),
        ("ECHO_AE_TITLE", "A_VERY_LONG_AE_TITLE", "is not a DICOM AE title"),
        ("ECHO_AE_TITLE", "BACK\\SLASH", "is not a DICOM AE title"),
        ("ECHO_ALLOWED_CALLERS", "OK,@host", "calling AE"),
        ("ECHO_PACS", "pacs.local:4242", "must be AET@host:port"),
        ("ECHO_PACS", "PACS@pacs.local", "must be host:port"),
        ("ECHO_RIS", "ris.local:0", "port between 1 and 65535"),
        ("ECHO_QUIET_SECONDS", "-1", "greater than or equal to 0"),
        ("ECHO_TLS_CERT", "/nonexistent/cert.pem", "must be set together"),
        ("ECHO_LOG_LEVEL", "LOUD", "is not one of"),
        ("ECHO_HL7_LISTEN", "2575", "HL7 listen address '2575' must be host:port"),
        ("ECHO_HL7_LISTEN", "0.0.0.0:70000", "port between 1 and 65535"),
        ("ECHO_HL7_ALLOWED_FACILITIES", "RIS,RAD^RIS", "sending facility 'RAD\\^RIS' must be"),
        ("ECHO_HL7_TLS_CERT", "/etc/hostname", "ECHO_HL7_TLS_CERT and ECHO_HL7_TLS_KEY must be set together"),
        ("ECHO_HL7_MAX_MESSAGE_KB", "0", "bad setting ECHO_HL7_MAX_MESSAGE_KB"),
    ],
)
def test_bad_setting_is_one_line_naming_it(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_missing_or_broken_toml_file(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("ae_title = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(Path(broken))


def test_overrides_win_over_the_environment_and_the_file(tmp_path, monkeypatch):
    config = tmp_path / "echo.toml"
    config.write_text("port = 104\nquiet_seconds = 3\n")
    monkeypatch.setenv("ECHO_PORT", "11113")
    monkeypatch.setenv("ECHO_QUIET_SECONDS", "4")
    settings = load_settings(config, port=2104)
    assert (settings.port, settings.quiet_seconds) == (2104, 4.0)


def test_an_override_is_validated_like_any_value():
    with pytest.raises(SettingsError, match="ECHO_PORT"):
        load_settings(port=0)


def test_a_misspelled_toml_key_is_refused_by_name(tmp_path):
    config = tmp_path / "echo.toml"
    config.write_text('ae_titel = "ECHO"\n')
    with pytest.raises(SettingsError, match="unknown key 'ae_titel'"):
        load_settings(config)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", ("2000", "1500")), ("2000", ("2000",)), ("TID1500, 2000,1500", ("1500", "2000"))],
)
def test_the_sr_templates_sent_per_draft(value, expected, monkeypatch):
    monkeypatch.setenv("ECHO_SR_TEMPLATES", value)
    assert load_settings().sr_templates == expected


@pytest.mark.parametrize("value", ["2000,9999", ",", "narrative"])
def test_an_unknown_sr_template_names_the_variable(value, monkeypatch):
    monkeypatch.setenv("ECHO_SR_TEMPLATES", value)
    with pytest.raises(SettingsError, match="ECHO_SR_TEMPLATES.*2000 .*1500"):
        load_settings()


def test_fhir_is_a_server_url_or_a_folder(tmp_path, monkeypatch):
    assert load_settings().fhir is None
    monkeypatch.setenv("ECHO_FHIR", "https://fhir.hospital.local/fhir")
    settings = load_settings()
    assert (settings.fhir_url, settings.fhir_folder) == ("https://fhir.hospital.local/fhir", None)
    monkeypatch.setenv("ECHO_FHIR", str(tmp_path))
    settings = load_settings()
    assert (settings.fhir_url, settings.fhir_folder) == (None, tmp_path)
    monkeypatch.setenv("ECHO_FHIR", "ftp://fhir.hospital.local")
    with pytest.raises(SettingsError, match="ECHO_FHIR.*not a FHIR base URL"):
        load_settings()


def test_a_fhir_token_file_must_exist_and_name_its_server(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHO_FHIR_TOKEN_FILE", str(tmp_path / "missing"))
    monkeypatch.setenv("ECHO_FHIR", "https://fhir.hospital.local/fhir")
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings()
    (tmp_path / "token").write_text("secret\n")
    monkeypatch.setenv("ECHO_FHIR_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.delenv("ECHO_FHIR")
    with pytest.raises(SettingsError, match="needs ECHO_FHIR"):
        load_settings()


def test_worker_listener_and_log_format(monkeypatch):
    settings = load_settings()
    assert (settings.worker_http, settings.log_format) == (MllpPeer("127.0.0.1", 8089), "text")
    monkeypatch.setenv("ECHO_WORKER_HTTP", "off")
    monkeypatch.setenv("ECHO_LOG_FORMAT", "JSON")
    settings = load_settings()
    assert (settings.worker_http, settings.log_format) == (None, "json")
    monkeypatch.setenv("ECHO_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="ECHO_LOG_FORMAT"):
        load_settings()


def test_the_onnxruntime_provider_setting_refuses_an_unknown_name(monkeypatch):
    assert load_settings().ort_provider == "auto"
    monkeypatch.setenv("ECHO_ORT_PROVIDER", "CUDA, CPUExecutionProvider")
    assert load_settings().ort_provider == "cuda,cpu"
    monkeypatch.setenv("ECHO_ORT_PROVIDER", "cdua")
    with pytest.raises(SettingsError, match="ECHO_ORT_PROVIDER"):
        load_settings()
