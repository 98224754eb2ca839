"""The node's settings: one typed object, read once in `main` and passed down.

Values come from environment variables (``ECHO_*``) and, optionally, a TOML file whose keys are
the same names without the prefix, lower-case (``ae_title = "ECHO"``). Environment variables win
over the file. A bad value is a `SettingsError` with a one-line message naming the variable.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from exporters.ae_title import check_ae_title
from node.config.choices import SR_TEMPLATES, check_ort_provider, parse_sr_templates
from node.config.peers import (
    CallerRule,
    DicomPeer,
    MllpPeer,
    parse_callers,
    parse_dicom_peer,
    parse_facilities,
    parse_listen_address,
    parse_mllp_peer,
)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message is one line, fit for an operator."""


def bundled_model_dir() -> Path:
    """The exported demo student shipped inside the `echo` package."""
    return Path(__file__).resolve().parents[2] / "echo" / "assets" / "models" / "student-onnx"


_TLS_FILES = ("tls_cert", "tls_key", "tls_ca", "hl7_tls_cert", "hl7_tls_key")
_SECRET_FILES = ("fhir_token_file", "fhir_ca", "status_token_file")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ECHO_", extra="ignore", frozen=True)
    read_environment: ClassVar[bool] = True  # False only for the overrides step of load_settings

    ae_title: str = "ECHO"
    port: int = Field(11112, ge=1, le=65535)
    allowed_callers: Annotated[tuple[CallerRule, ...], NoDecode] = ()
    # A production node (see `production_reason`) refuses an empty allow-list unless this is true.
    allow_any_caller: bool = False
    production: bool = False  # true: a production node even on the embedded SQLite and broker
    data_dir: Path = Path("./echo-data")
    database_url: str = ""  # empty: SQLite in the data dir
    # A file holding the database password (a Docker/systemd secret): the URL then carries none.
    database_password_file: Path | None = None
    broker_url: str = ""  # empty: kombu's SQLAlchemy transport on SQLite in the data dir
    quiet_seconds: float = Field(10.0, ge=0)
    draft_lateral_only: bool = False  # draft a study of lateral views alone (else it waits for a frontal)
    pacs: Annotated[DicomPeer | None, NoDecode] = None
    ris: Annotated[MllpPeer | None, NoDecode] = None
    model_dir: Path | None = None  # unset: the bundled demo model
    max_associations: int = Field(10, ge=1, le=1000)
    # What one caller, one socket or one instance may take from the SCP (see node.dicom.limits).
    max_associations_per_host: int | None = Field(None, ge=1, le=1000)  # unset: ECHO_MAX_ASSOCIATIONS
    handshake_timeout_seconds: float = Field(10.0, gt=0)  # TLS handshake and A-ASSOCIATE-RQ
    idle_timeout_seconds: float = Field(60.0, gt=0)  # an association or a half-read PDU with no data
    max_instance_mb: int = Field(256, ge=1)
    min_free_mb: int = Field(1024, ge=0)  # below this free on the spool's disk: C-STORE answers 0xA700
    # Retention of received images: unset keeps them; what drafted a report is kept unless told.
    retention_days: float | None = Field(None, gt=0)
    retention_keep_reported: bool = True
    # TLS for DICOM (SCP and SCU) and MLLP; all unset: plain TCP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    ris_tls: bool = False
    # HL7 header fields and delivery policy.
    hl7_sending_application: str = "ECHO"
    hl7_sending_facility: str = "ECHO"
    hl7_receiving_application: str = "RIS"
    hl7_receiving_facility: str = "RIS"
    delivery_timeout_seconds: float = Field(10.0, gt=0)
    delivery_max_attempts: int = Field(0, ge=0)  # 0: no cap; the horizon decides when to give up
    delivery_horizon_hours: float = Field(24.0, gt=0)  # transient failures are retried this long
    delivery_backoff_seconds: float = Field(5.0, ge=0)
    # Inference recovery: attempts lost with their process, republishing, the heartbeat, image size.
    max_dead_attempts: int = Field(3, ge=1)
    requeue_after_seconds: float = Field(600.0, gt=0)
    heartbeat_timeout_seconds: float = Field(60.0, gt=0)
    max_pixel_megabytes: float = Field(256.0, gt=0)
    # The draft gate: a draft under this mean token confidence (or with duplicated words, a missing
    # section) is decoded again with more steps; still broken, it is never sent (0: no floor).
    draft_min_confidence: float = Field(0.75, ge=0, le=1)
    draft_gate: bool = True  # false sends every draft as decoded (plumbing tests; never in production)
    log_level: str = "INFO"
    # The inbound HL7 listener for signed reports (node.hl7): MLLP on host:port; unset: off.
    hl7_listen: Annotated[MllpPeer | None, NoDecode] = None
    # /metrics, /healthz, /readyz (node.observe) on host:port; "" or "off": none.
    http: Annotated[MllpPeer | None, NoDecode] = MllpPeer("127.0.0.1", 8088)
    hl7_allowed_facilities: Annotated[tuple[str, ...], NoDecode] = ()  # MSH-4; empty: any, with a warning
    hl7_tls_cert: Path | None = None  # both or neither; neither: plain MLLP
    hl7_tls_key: Path | None = None
    hl7_max_message_kb: int = Field(1024, ge=1, le=65536)  # a longer message is answered AR
    hl7_max_connections: int = Field(20, ge=1, le=1000)
    hl7_read_timeout_seconds: float = Field(30.0, gt=0)  # a started message must arrive whole within
    hl7_idle_timeout_seconds: float = Field(300.0, gt=0)  # a connection silent this long is closed
    # The SRs sent to ECHO_PACS per draft: 2000 the narrative report, 1500 the IHE AI Results SR.
    sr_templates: Annotated[tuple[str, ...], NoDecode] = SR_TEMPLATES
    # FHIR R4 DiagnosticReport per draft: an http(s) base URL (POST/PUT) or a folder; unset: none.
    fhir: str | None = None
    fhir_token_file: Path | None = None  # a file holding the bearer token for ECHO_FHIR
    fhir_ca: Path | None = None  # CA bundle for ECHO_FHIR's TLS certificate; unset: the system's
    # `echo-worker`'s own /metrics /healthz /readyz listener; "" or "off": none.
    worker_http: Annotated[MllpPeer | None, NoDecode] = MllpPeer("127.0.0.1", 8089)
    # The read-only status page (/status on ECHO_HTTP): a file holding the token it asks for;
    # unset: no token, and then the page is served only when ECHO_HTTP is bound to loopback.
    status_token_file: Path | None = None
    log_format: str = "text"  # "json": one JSON object per line (study id, never patient data)
    # onnxruntime execution providers for inference: "auto" (the best installed: TensorRT, CUDA, CPU)
    # or names best first ("cuda", "tensorrt,cuda", "cpu"); one missing falls back, with a warning.
    ort_provider: str = "auto"
    # Studies drafted together per engine pass on a GPU worker (worker.batch): the task for one study
    # also claims up to this many minus one other queued studies; 1 drafts each study alone.
    gpu_batch: int = Field(1, ge=1, le=64)

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return check_ae_title(value, "AE title")

    @field_validator(
        "model_dir", "database_password_file", "fhir", *_TLS_FILES, *_SECRET_FILES, mode="before"
    )
    @classmethod
    def _blank_path_is_unset(cls, value: Any) -> Any:
        # ECHO_MODEL_DIR= (an empty variable, as compose passes an unset one) means unset, not ".".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url  # not at import: --help stays fast
        from sqlalchemy.exc import ArgumentError

        value = value.strip()
        if value:
            try:
                make_url(value)
            except ArgumentError:  # the value itself is not repeated: it may hold a password
                raise ValueError(
                    "not a SQLAlchemy URL (dialect+driver://user@host:port/database, "
                    "e.g. postgresql+psycopg://echo@db.hospital.local:5432/echo)"
                ) from None
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        value = value.strip()
        scheme, sep, _ = value.partition("://")
        if value and (not sep or not scheme):
            raise ValueError(
                "not a broker URL (transport://host:port/..., e.g. redis://queue.hospital.local:6379/0)"
            )
        return value

    @field_validator("allowed_callers", mode="before")
    @classmethod
    def _callers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_callers(value)
        if isinstance(value, list | tuple):
            return parse_callers(",".join(v if isinstance(v, str) else str(v) for v in value))
        return value

    @field_validator("pacs", mode="before")
    @classmethod
    def _pacs(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_dicom_peer(value) if value.strip() else None
        return value

    @field_validator("ris", "hl7_listen", "http", "worker_http", mode="before")
    @classmethod
    def _ris(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            if info.field_name in ("http", "worker_http"):
                off = value.strip().lower() in ("", "off")
                return None if off else parse_listen_address(value, "HTTP listen address")
            parse = parse_mllp_peer if info.field_name == "ris" else parse_listen_address
            return parse(value) if value.strip() else None
        return value

    @field_validator("hl7_allowed_facilities", mode="before")
    @classmethod
    def _hl7_facilities(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            value = ",".join(v if isinstance(v, str) else str(v) for v in value)
        return parse_facilities(value) if isinstance(value, str) else value

    @field_validator("sr_templates", mode="before")
    @classmethod
    def _sr_templates(cls, value: Any) -> Any:
        return parse_sr_templates(value)

    @field_validator("ort_provider")
    @classmethod
    def _ort_provider(cls, value: str) -> str:
        return check_ort_provider(value)

    @field_validator("fhir")
    @classmethod
    def _fhir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, sep, rest = value.strip().partition("://")
        if sep and (scheme.lower() not in ("http", "https") or not rest.strip("/")):
            raise ValueError("not a FHIR base URL (https://fhir.hospital.local/fhir) or a folder")
        return value.strip()

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("text", "json"):
            raise ValueError(f"log format {value!r} is not text or json")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError(f"log level {value!r} is not one of DEBUG, INFO, WARNING, ERROR")
        return value

    @model_validator(mode="after")
    def _database_password_file(self) -> Settings:
        path = self.database_password_file
        if path is not None:
            if not self.database_url:
                raise ValueError(
                    "ECHO_DATABASE_PASSWORD_FILE needs ECHO_DATABASE_URL (the SQLite default has no password)"
                )
            if not path.is_file():
                raise ValueError(f"ECHO_DATABASE_PASSWORD_FILE: {path} does not exist")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if (self.hl7_tls_cert is None) != (self.hl7_tls_key is None):
            raise ValueError("ECHO_HL7_TLS_CERT and ECHO_HL7_TLS_KEY must be set together")
        for path in (getattr(self, name) for name in _TLS_FILES):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        for name in _SECRET_FILES:
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"ECHO_{name.upper()}: {path} does not exist")
        if self.fhir_token_file is not None and self.fhir is None:
            raise ValueError("ECHO_FHIR_TOKEN_FILE needs ECHO_FHIR (the FHIR server it is for)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init_settings carries the TOML file's values (see load_settings); the environment wins.
        return (env_settings, init_settings) if cls.read_environment else (init_settings,)

    # Derived locations: defined once, used by every role.
    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def effective_database_url(self) -> str:
        if not self.database_url:
            return f"sqlite:///{(self.data_dir / 'echo.db').resolve()}"
        if self.database_password_file is None:
            return self.database_url
        from sqlalchemy.engine import make_url

        password = self.database_password_file.read_text(encoding="utf-8").strip()
        return make_url(self.database_url).set(password=password).render_as_string(hide_password=False)

    @property
    def fhir_url(self) -> str | None:
        """ECHO_FHIR when it is a server's base URL (else None: unset, or a folder)."""
        return self.fhir if self.fhir and "://" in self.fhir else None

    @property
    def fhir_folder(self) -> Path | None:
        """ECHO_FHIR when it is a folder the DiagnosticReports are written to (else None)."""
        return Path(self.fhir) if self.fhir and "://" not in self.fhir else None

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def embedded_broker(self) -> bool:
        return self.effective_broker_url.startswith("sqla+")

    @property
    def effective_model_dir(self) -> Path:
        return self.model_dir or bundled_model_dir()

    @property
    def production_reason(self) -> str | None:
        """Why this is a production node (its SCP then refuses an empty allow-list); None: embedded."""
        if self.production:
            return "ECHO_PRODUCTION is true"
        if not self.embedded_broker:
            return "ECHO_BROKER_URL names an external broker"
        if self.database_url and not self.database_url.startswith("sqlite"):
            return "ECHO_DATABASE_URL names an external database"
        return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"settings file {path} is not valid TOML: {error}") from None
    values = {key.lower().removeprefix("echo_"): value for key, value in raw.items()}
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(f"settings file {path}: unknown key {unknown[0]!r} (a misspelled setting?)")
    return values


class _OverriddenSettings(Settings):
    """Settings validated from given values only: the environment was already read into them."""

    read_environment: ClassVar[bool] = False


def _config_path(config_file: Path | None) -> Path | None:
    return config_file or (Path(os.environ["ECHO_CONFIG"]) if os.environ.get("ECHO_CONFIG") else None)


def _label(field: str, path: Path | None, file_values: dict[str, Any]) -> str:
    variable = f"ECHO_{field.upper()}"
    if path is not None and field in file_values and variable not in os.environ:
        return f"{field} in {path}"
    return variable


def setting_name(field: str, config_file: Path | None = None) -> str:
    """How the operator gave `field`: ``model_dir in /etc/echo/echo.toml`` or ``ECHO_MODEL_DIR``."""
    path = _config_path(config_file)
    try:
        file_values = _read_toml(path) if path else {}
    except SettingsError:
        file_values = {}
    return _label(field, path, file_values)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment and an optional TOML file (``ECHO_CONFIG`` names one).

    The environment wins over the file; ``overrides`` (command-line flags, tests) win over both.
    A bad value names the variable, or the file's key when the value came from the file.
    """
    path = _config_path(config_file)
    file_values = _read_toml(path) if path else {}
    try:
        settings = Settings(**file_values)
        if overrides:
            settings = _OverriddenSettings(**{**settings.model_dump(), **overrides})
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a check across settings: its message names them
            raise SettingsError(f"bad settings: {message}") from None
        name = _label(str(first["loc"][0]), path, file_values)
        raise SettingsError(f"bad setting {name}: {message}") from None
    return settings
