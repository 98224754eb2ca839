"""Delivering a draft's FHIR Bundle: one POST to a FHIR server's base, or one JSON file in a folder.

`send_fhir` makes one attempt (the outbox retries) and judges the server's answer:

- 2xx with a ``transaction-response`` Bundle whose every entry answered 2xx: DELIVERED, with the
  report's location on the server;
- no answer (refused, reset, timed out, TLS handshake failed), 408, 429 or 5xx: RETRY;
  a 2xx that is not such a Bundle: RETRY as a malformed answer, as for a garbled HL7 ACK;
- any other status (400 invalid, 401/403 token, 404 wrong base URL, 409/412 conflicts, a
  redirect): FAILED, since the same bytes will be refused again.

The reason is one line: the status and the server's OperationOutcome issues, with any patient
identifier the Bundle carries replaced by "[patient id]" (a server may quote it back). Conditional
updates make a resend of the same Bundle harmless, so RETRY is safe even when the first attempt
did arrive.

httpx sends it: timeouts per phase (connect, write, read), TLS with the given CA file or the
system's CAs (`ssl.create_default_context`, not certifi's bundle), no redirects followed.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from fhir.resources.R4B.bundle import Bundle

from exporters.outcome import DeliveryOutcome, SendStatus
from exporters.tls_errors import describe_handshake_error

__all__ = ["FhirOutcome", "outcome_of_response", "send_fhir", "write_fhir"]

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
MAX_REASON = 300  # characters of server diagnostics kept in the one-line reason
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")  # RFC 6750 b64token: nothing that could split a header
_WHITESPACE = re.compile(r"\s+")
_UUID_URL = re.compile(r"^urn:uuid:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


@dataclass(frozen=True, kw_only=True)
class FhirOutcome(DeliveryOutcome):
    """One Bundle's delivery: the HTTP status (None when none came back) and where the report is
    now (``DiagnosticReport/<id>/_history/<version>`` on a server, the file's path in a folder)."""

    http_status: int | None = None
    report_location: str | None = None


def send_fhir(
    bundle: Bundle,
    base_url: str,
    *,
    token: str | None = None,
    ca_file: Path | None = None,
    timeout: float,
) -> FhirOutcome:
    """POST the transaction `bundle` to `base_url` once; `timeout` bounds each phase in seconds."""
    report_index = _check_bundle(bundle)
    url = _check_base_url(base_url)
    if token is not None and (not isinstance(token, str) or not _TOKEN.match(token)):
        raise ValueError("token must be a bearer token (RFC 6750 characters, no spaces or line breaks)")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    verify = _tls_context(url, ca_file)
    where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
    headers = {"Content-Type": f"{FHIR_JSON}; charset=utf-8", "Accept": FHIR_JSON, "Prefer": "return=minimal"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with httpx.Client(verify=verify, timeout=timeout, follow_redirects=False) as client:
            response = client.post(url, content=bundle.model_dump_json().encode("utf-8"), headers=headers)
    except httpx.TimeoutException:
        outcome = _retry(f"timeout: no answer from {where} within {timeout}s")
    except httpx.ConnectError as error:
        outcome = _retry(_connect_failure(error, where, timeout))
    except httpx.HTTPError as error:
        outcome = _retry(f"network error with {where}: {type(error).__name__}: {error}")
    else:
        outcome = outcome_of_response(response, bundle, report_index)
    log.info(
        "FHIR report %s to %s: %s%s",
        _report_key(bundle, report_index),
        where,
        outcome.status.value,
        f" ({outcome.error})" if outcome.error else "",
    )
    return outcome


def outcome_of_response(
    response: httpx.Response, bundle: Bundle, report_index: int | None = None
) -> FhirOutcome:
    """What the server's answer to `bundle` means; see the module docstring for the table."""
    if report_index is None:
        report_index = _check_bundle(bundle)
    status = response.status_code
    if 200 <= status < 300:
        return _judge_transaction_response(response, bundle, report_index)
    reason = f"{status} {response.reason_phrase}".strip()
    details = _issues(response, bundle)
    if details:
        reason = f"{reason}: {details}"
    if status in (408, 429) or status >= 500:
        return FhirOutcome(status=SendStatus.RETRY, error=f"server error {reason}", http_status=status)
    if 300 <= status < 400:
        target = response.headers.get("location", "?")
        reason = f"{reason} to {target}: set the FHIR base URL to where the server lives"
    return FhirOutcome(
        status=SendStatus.FAILED, error=f"server refused the bundle: {reason}", http_status=status
    )


def write_fhir(bundle: Bundle, folder: Path) -> FhirOutcome:
    """Write `bundle` as JSON into `folder`, atomically: a temporary file, fsync, then a rename.

    The name comes from the report's key (its fullUrl), so a resend or a later draft of the same
    study replaces the file, and nothing of the patient is in the name. A missing folder or a full
    disk is RETRY: a share may be mounted again, space freed.
    """
    report_index = _check_bundle(bundle)
    if not isinstance(folder, Path):
        raise TypeError(f"folder must be a pathlib.Path, got {type(folder).__name__}")
    target = folder / f"DiagnosticReport-{_report_key(bundle, report_index)}.json"
    if not folder.is_dir():
        return _retry(f"the FHIR folder {folder} does not exist or is not a folder")
    data = bundle.model_dump_json().encode("utf-8")
    temporary: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".", suffix=".tmp", delete=False) as handle:
            temporary = Path(handle.name)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        temporary = None
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash only once the folder is synced
        finally:
            os.close(directory)
    except OSError as error:
        return _retry(f"could not write {target.name} in {folder}: {error.strerror or error}")
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
    log.info("FHIR report %s written to %s", _report_key(bundle, report_index), folder)
    return FhirOutcome(status=SendStatus.DELIVERED, report_location=str(target))


def _check_bundle(bundle: Bundle) -> int:
    """The index of the DiagnosticReport entry of a transaction Bundle built by `build_diagnostic_report`."""
    if not isinstance(bundle, Bundle):
        raise TypeError(f"bundle must be a fhir.resources Bundle, got {type(bundle).__name__}")
    if bundle.type != "transaction":
        raise ValueError(f"bundle must be a transaction Bundle, got type {bundle.type!r}")
    for index, entry in enumerate(bundle.entry or []):
        if entry.resource is not None and entry.resource.get_resource_type() == "DiagnosticReport":
            if not _UUID_URL.match(entry.fullUrl or ""):
                raise ValueError("the bundle's DiagnosticReport needs a urn:uuid fullUrl (its report key)")
            return index
    raise ValueError("the bundle holds no DiagnosticReport")


def _report_key(bundle: Bundle, report_index: int) -> str:
    return _UUID_URL.match(bundle.entry[report_index].fullUrl).group(1)


def _check_base_url(base_url: str) -> httpx.URL:
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as error:
        raise ValueError(f"base_url {base_url!r} is not a URL: {error}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url must be an http:// or https:// URL with a host, got {base_url!r}")
    if url.query or url.fragment or url.userinfo:
        raise ValueError("base_url must be the server's FHIR base, without query, fragment or credentials")
    return url.copy_with(path=url.path.rstrip("/") or "/")


def _tls_context(url: httpx.URL, ca_file: Path | None) -> ssl.SSLContext | bool:
    if ca_file is None:
        return ssl.create_default_context() if url.scheme == "https" else False
    if not isinstance(ca_file, Path):
        raise TypeError(f"ca_file must be a pathlib.Path or None, got {type(ca_file).__name__}")
    if url.scheme != "https":
        raise ValueError(f"ca_file {ca_file} given for a plain http:// base URL: use https:// or drop it")
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"ca_file {ca_file} cannot be loaded as PEM certificates: {error}") from None


def _connect_failure(error: httpx.ConnectError, where: str, timeout: float) -> str:
    """Why the connection failed, naming TLS when the handshake is what failed."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return describe_handshake_error(cause, where, timeout, "HTTP")
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused by {where}"
        cause = cause.__cause__ or cause.__context__
    return f"could not connect to {where}: {error}"


def _judge_transaction_response(response: httpx.Response, bundle: Bundle, report_index: int) -> FhirOutcome:
    status = response.status_code
    try:
        answer = response.json()
    except ValueError:
        answer = None
    entries = answer.get("entry") if isinstance(answer, dict) else None
    if (
        not isinstance(answer, dict)
        or answer.get("resourceType") != "Bundle"
        or answer.get("type") != "transaction-response"
        or not isinstance(entries, list)
        or len(entries) != len(bundle.entry)
    ):
        return FhirOutcome(
            status=SendStatus.RETRY,
            error=f"malformed answer: {status} without a transaction-response for all {len(bundle.entry)} entries",
            http_status=status,
        )
    statuses = [str(((entry or {}).get("response") or {}).get("status", "")) for entry in entries]
    refused = [
        f"entry {index}: {value or 'no status'}"
        for index, value in enumerate(statuses)
        if not value.startswith("2")
    ]
    if refused:
        return FhirOutcome(
            status=SendStatus.RETRY,
            error=f"malformed answer: a {status} transaction-response with failed entries ({', '.join(refused)})",
            http_status=status,
        )
    location = ((entries[report_index] or {}).get("response") or {}).get("location")
    return FhirOutcome(status=SendStatus.DELIVERED, http_status=status, report_location=location or None)


def _issues(response: httpx.Response, bundle: Bundle) -> str:
    """The server's OperationOutcome issues as one line without patient identifiers; empty if
    the body is not an OperationOutcome (an HTML error page says nothing worth keeping)."""
    try:
        outcome = response.json()
    except ValueError:
        return ""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in outcome.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = (issue.get("details") or {}).get("text") or issue.get("diagnostics") or ""
        where = ", ".join(str(item) for item in issue.get("expression") or issue.get("location") or [])
        parts.append(
            " ".join(
                part
                for part in (
                    f"{issue.get('severity', '?')}/{issue.get('code', '?')}",
                    text,
                    f"at {where}" if where else "",
                )
                if part
            )
        )
    line = _WHITESPACE.sub(" ", "; ".join(parts)).strip()
    for identifier in _patient_identifiers(bundle):
        line = line.replace(identifier, "[patient id]")
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 3] + "..."


def _patient_identifiers(bundle: Bundle) -> list[str]:
    """The patient ID and issuer values the Bundle's subjects carry, longest first."""
    found = set()
    for entry in bundle.entry or []:
        subject = getattr(entry.resource, "subject", None)
        identifier = getattr(subject, "identifier", None)
        if identifier is None:
            continue
        for value in (identifier.value, identifier.assigner.display if identifier.assigner else None):
            if value:
                found.add(value)
    return sorted(found, key=len, reverse=True)


def _retry(reason: str) -> FhirOutcome:
    return FhirOutcome(status=SendStatus.RETRY, error=reason)
