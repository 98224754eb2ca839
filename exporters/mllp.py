"""MLLP client: one connection per ORU, the ACK read to its frame end, the outcome from `check_ack`.

Framing (HL7 v2 MLLP release 2): 0x0B, the message, 0x1C 0x0D. The reader keeps what arrives until
a whole frame is in: an ACK may come in several TCP segments, after stray bytes, or never. Every
network trouble (refused, reset, closed early, TLS, no answer within `timeout`) is a RETRY: the
RIS may be back later and the outbox resends. A failed TLS handshake is reported as one, naming
TLS (a TLS client at a plain MLLP port otherwise looks like a RIS that never answers).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time

from exporters.ack import check_ack
from exporters.outcome import AckOutcome, SendStatus
from exporters.tls_errors import describe_handshake_error

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\r"
MAX_ACK_BYTES = 1 << 20  # an ACK is a few hundred bytes; more than this is not an ACK


class FrameTooLarge(ValueError):
    """More than MAX_ACK_BYTES arrived without a complete frame."""


def frame(message: bytes) -> bytes:
    """Wrap one HL7 message for the wire; the framing bytes may not occur inside it."""
    if START_BLOCK in message or b"\x1c" in message:
        raise ValueError("message contains an MLLP framing byte (0x0B or 0x1C)")
    return START_BLOCK + message + END_BLOCK


class FrameReader:
    """Collects received bytes and hands out the first complete frame's payload.

    Bytes before a start block are dropped; a new start block before the end block restarts the
    frame (what came before it was not a frame).
    """

    def __init__(self, max_bytes: int = MAX_ACK_BYTES) -> None:
        self._buffer = bytearray()
        self._max_bytes = max_bytes

    def feed(self, chunk: bytes) -> bytes | None:
        self._buffer += chunk
        end = self._buffer.find(END_BLOCK)
        while end != -1:
            start = self._buffer.rfind(START_BLOCK, 0, end)
            if start != -1:
                payload = bytes(self._buffer[start + 1 : end])
                del self._buffer[: end + len(END_BLOCK)]
                return payload
            del self._buffer[: end + len(END_BLOCK)]  # an end without a start: garbage
            end = self._buffer.find(END_BLOCK)
        start = self._buffer.rfind(START_BLOCK)
        if start > 0:
            del self._buffer[:start]
        elif start == -1:
            self._buffer.clear()
        if len(self._buffer) > self._max_bytes:
            raise FrameTooLarge(f"more than {self._max_bytes} bytes without an end of frame")
        return None


def send_hl7(
    message_bytes: bytes,
    host: str,
    port: int,
    *,
    control_id: str,
    timeout: float,
    tls_context: ssl.SSLContext | None = None,
) -> AckOutcome:
    """Send one message and judge its ACK; `timeout` bounds the whole exchange, connect included."""
    framed = _check_arguments(message_bytes, host, port, control_id, timeout, tls_context)
    where = f"{host}:{port}"
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as plain:
            connection = _handshake(plain, host, tls_context, deadline, where, timeout)
            with connection:
                connection.settimeout(_remaining(deadline))
                connection.sendall(framed)
                payload = _read_frame(connection, deadline)
    except _HandshakeFailed as failure:
        outcome = _retry(str(failure))
    except TimeoutError:
        outcome = _retry(f"timeout: no complete ACK from {where} within {timeout}s")
    except ConnectionRefusedError:
        outcome = _retry(f"connection refused by {where}")
    except ssl.SSLError as error:
        outcome = _retry(f"TLS error with {where}: {error}")
    except OSError as error:
        outcome = _retry(f"network error with {where}: {error}")
    except FrameTooLarge as error:
        outcome = _retry(f"malformed ACK from {where}: {error}")
    else:
        outcome = check_ack(payload, control_id)
    log.info(
        "ORU %s to %s: %s%s",
        control_id,
        where,
        outcome.status.value,
        f" ({outcome.error})" if outcome.error else "",
    )
    return outcome


def _check_arguments(
    message_bytes: bytes, host: str, port: int, control_id: str, timeout: float, tls_context: object
) -> bytes:
    if not isinstance(message_bytes, bytes) or not message_bytes.startswith(b"MSH"):
        raise ValueError("message_bytes must be an encoded HL7 message starting with MSH")
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {port!r}")
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if tls_context is not None and not isinstance(tls_context, ssl.SSLContext):
        raise TypeError(f"tls_context must be an ssl.SSLContext or None, got {type(tls_context).__name__}")
    separator = message_bytes[3:4]
    msh_fields = message_bytes.split(b"\r", 1)[0].split(separator)
    sent_id = msh_fields[9].decode("utf-8", errors="replace") if len(msh_fields) > 9 else ""
    if not control_id or sent_id != control_id:
        raise ValueError(f"control_id {control_id!r} is not the message's MSH-10 ({sent_id!r})")
    return frame(message_bytes)


class _HandshakeFailed(Exception):
    """The TLS handshake failed; the message names TLS and the likely cause."""


def _handshake(
    plain: socket.socket,
    host: str,
    tls_context: ssl.SSLContext | None,
    deadline: float,
    where: str,
    timeout: float,
) -> socket.socket:
    """The connection to send on: `plain` itself, or wrapped in TLS after a completed handshake.

    A plain RIS never answers a TLS hello (it waits for an MLLP frame) or hangs up: either is
    reported as a TLS handshake failure, not as a missing ACK.
    """
    if tls_context is None:
        return plain
    try:
        plain.settimeout(_remaining(deadline))
        return tls_context.wrap_socket(plain, server_hostname=host)
    except (OSError, ValueError) as error:  # ssl.SSLError and TimeoutError are OSErrors
        raise _HandshakeFailed(describe_handshake_error(error, where, timeout, "MLLP")) from error


def _read_frame(connection: socket.socket, deadline: float) -> bytes:
    reader = FrameReader()
    while True:
        connection.settimeout(_remaining(deadline))
        chunk = connection.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed before a complete ACK frame")
        payload = reader.feed(chunk)
        if payload is not None:
            return payload


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    return remaining


def _retry(reason: str) -> AckOutcome:
    return AckOutcome(status=SendStatus.RETRY, error=reason)
