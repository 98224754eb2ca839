"""TLS handshake failures in words that name TLS, for both senders.

A node configured for TLS that talks to a plain (non-TLS) PACS or RIS port sees its handshake
answered with bytes that are not TLS, a hang-up, or nothing at all. Reported as "could not connect"
or "no complete ACK", that sends an operator looking for a network fault; these messages say that
the TLS handshake failed and suggest the likely cause.
"""

from __future__ import annotations

import socket
import ssl

_NOT_TLS_REASONS = {
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
}


def describe_handshake_error(error: BaseException, where: str, timeout: float, protocol: str) -> str:
    """One line for a failed TLS handshake with `where` (host:port or AE@host:port); `protocol`
    (DICOM, MLLP) names what a plain port there would speak instead."""
    failed = f"TLS handshake with {where} failed"
    plain_port = f"the port may be plain {protocol} without TLS"
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = error.verify_message or str(error)
        return f"{failed}: certificate not trusted ({error.reason or 'CERTIFICATE_VERIFY_FAILED'}: {detail})"
    if isinstance(error, TimeoutError):
        return f"{failed}: no TLS answer within {timeout}s; {plain_port}"
    if isinstance(error, ssl.SSLEOFError | ConnectionError):
        return f"{failed}: the peer closed the connection; {plain_port}, or it refuses this client's TLS"
    if isinstance(error, ssl.SSLError) and error.reason in _NOT_TLS_REASONS:
        return f"{failed}: the answer is not TLS ({error.reason}); {plain_port}"
    if isinstance(error, ssl.SSLError):
        return f"{failed}: {error.reason or error}"
    return f"{failed}: {error}"


def probe_handshake(
    host: str, port: int, context: ssl.SSLContext, timeout: float, where: str, protocol: str
) -> str | None:
    """Why a TLS handshake with host:port fails; None if TCP itself fails, or if the handshake works.

    For a sender whose library swallows the handshake error (pynetdicom logs it and reports only
    that the connection failed): one more connection, made only after a failure, to name it.
    """
    try:
        plain = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with plain:
        try:
            with context.wrap_socket(plain, server_hostname=host):
                return None
        except (OSError, ValueError) as error:  # ssl.SSLError and TimeoutError are OSErrors
            return describe_handshake_error(error, where, timeout, protocol)
