"""TLS for the node's outgoing connections: C-STORE to the PACS and MLLP to the RIS.

The same files as the SCP (`tls_cert`, `tls_key`, `tls_ca`): the node presents its certificate
(mutual TLS) and checks the peer's against `tls_ca`, or the system's CAs when none is given.
DICOM uses TLS when the node has a certificate; MLLP when `ris_tls` is set.
"""

from __future__ import annotations

import ssl

from node.config.settings import Settings


def _client_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.tls_ca)
    if settings.tls_cert is not None and settings.tls_key is not None:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def dicom_client_tls(settings: Settings) -> ssl.SSLContext | None:
    return _client_context(settings) if settings.tls_cert is not None else None


def mllp_client_tls(settings: Settings) -> ssl.SSLContext | None:
    return _client_context(settings) if settings.ris_tls else None


def fhir_token(settings: Settings) -> str | None:
    """The FHIR server's bearer token (ECHO_FHIR_TOKEN_FILE), read at each send so that a rotated
    token file takes effect at once; None when no file is set."""
    path = settings.fhir_token_file
    if path is None:
        return None
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"ECHO_FHIR_TOKEN_FILE {path} is empty")
    return token
