"""The inbound MLLP listener: signed reports from the RIS, one ACK per message, on many connections.

A `socketserver.ThreadingTCPServer` whose accept thread only accepts and counts; each connection
has its own thread, which does the TLS handshake (bounded by `handshake_timeout_s`, when the
listener has a certificate), then reads frames (`node.hl7.framing.FrameBuffer`) and answers each
with the ACK `node.hl7.receiver.Receiver` builds, in order, on the same connection (a RIS may send
one message per connection or keep one open).

Limits, so that nothing a peer sends can stop the listener or the node:

- `max_message_bytes`: a longer message is answered AR (its MSH-10 named when its MSH is readable),
  the rest of it is read and dropped, and the connection goes on;
- `read_timeout_s`: a message that has started must arrive whole within it, else the connection is
  closed (the sender, with no ACK, sends again); sending an ACK is bounded by it too;
- `idle_timeout_s`: a connection with nothing to say for that long is closed;
- `max_connections`: at the limit, the connection idle the longest is closed to make room; when all
  are busy the new one is closed at once.

Bytes outside frames and frames cut short are dropped and counted; a connection that had any logs
one line when it ends. Logs name hosts and counts, never message content. `stop()` stops accepting,
closes idle connections, lets messages being stored finish (a few seconds), then closes the rest.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from node.config.settings import Settings
from node.dicom.limits import HostRate
from node.hl7.ack import AckCode, Condition, OwnNames, Refusal, build_ack
from node.hl7.framing import FrameBuffer, Oversized, frame
from node.hl7.receiver import Answer, FacilityPolicy, Receiver

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
_FRAMING_BYTES = str.maketrans({"\x0b": "?", "\x1c": "?"})


@dataclass(frozen=True)
class ListenerLimits:
    max_message_bytes: int = 1 << 20
    max_connections: int = 20
    read_timeout_s: float = 30.0
    idle_timeout_s: float = 300.0
    handshake_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ListenerLimits:
        return cls(
            max_message_bytes=settings.hl7_max_message_kb * 1024,
            max_connections=settings.hl7_max_connections,
            read_timeout_s=settings.hl7_read_timeout_seconds,
            idle_timeout_s=settings.hl7_idle_timeout_seconds,
            handshake_timeout_s=settings.handshake_timeout_seconds,
        )


@dataclass(eq=False)
class _Connection:
    sock: Any
    host: str
    active: bool = False  # a message is arriving or being answered: never closed to make room
    last_activity: float = field(default_factory=time.monotonic)
    evicted: bool = False


class _Connections:
    """The open connections, for the limit, eviction of idle ones and a clean stop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[int, _Connection] = {}  # by the accepted socket's id
        self._lock = threading.Condition()

    def opened(self, sock: socket.socket, host: str) -> bool:
        with self._lock:
            counted = [c for c in self._open.values() if not c.evicted]
            if len(counted) >= self.limit:
                idle = [c for c in counted if not c.active]
                if not idle:
                    return False
                oldest = min(idle, key=lambda c: c.last_activity)
                oldest.evicted = True
                _shut(oldest.sock)
            self._open[id(sock)] = _Connection(sock, host)
            return True

    def get(self, sock: socket.socket) -> _Connection:
        with self._lock:
            return self._open[id(sock)]

    def forget(self, connection: _Connection, accepted: socket.socket) -> None:
        with self._lock:
            self._open.pop(id(accepted), None)
            self._lock.notify_all()

    def close(self, *, busy_too: bool) -> None:
        with self._lock:
            for connection in self._open.values():
                if busy_too or not connection.active:
                    _shut(connection.sock)

    def wait_empty(self, timeout_s: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self._open, timeout_s)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


def _shut(sock: Any) -> None:
    """End a connection from another thread: its blocked recv returns (plain) or fails (TLS)."""
    with contextlib.suppress(OSError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], listener: Hl7Listener) -> None:
        self.listener = listener
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.listener._admit(request, client_address[0])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not socketserver's traceback on stderr (a traceback may quote message values)."""
        log.error("HL7 connection from %s failed: %s", client_address[0], type(sys.exc_info()[1]).__name__)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.server.listener._serve(self.request, self.client_address[0])


class Hl7Listener:
    def __init__(
        self,
        receiver: Receiver,
        address: tuple[str, int],
        *,
        tls: ssl.SSLContext | None = None,
        limits: ListenerLimits | None = None,
    ) -> None:
        self.receiver = receiver
        self.address = address
        self.tls = tls
        self.limits = limits or ListenerLimits()
        self.connections = _Connections(self.limits.max_connections)
        self.log_rate = HostRate(per_minute=2)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "listener not started"
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in a background thread; OSError if the address is taken or not ours."""
        self._server = _Server(self.address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="hl7-listener", daemon=True
        )
        self._thread.start()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop accepting; idle connections close now, busy ones after their ACK or `grace_s`."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self.connections.close(busy_too=False)
        if not self.connections.wait_empty(grace_s):
            self.connections.close(busy_too=True)
            self.connections.wait_empty(1.0)
        self._server = None

    # --- on the accept thread ------------------------------------------------------------------

    def _admit(self, sock: socket.socket, host: str) -> bool:
        if self._stopping.is_set():
            return False
        if self.connections.opened(sock, host):
            return True
        if self.log_rate.allow(("full", host)):
            log.warning(
                "HL7 connection from %s closed: %d connections busy (ECHO_HL7_MAX_CONNECTIONS)",
                host,
                self.limits.max_connections,
            )
        return False

    # --- on the connection's thread ------------------------------------------------------------

    def _serve(self, accepted: socket.socket, host: str) -> None:
        connection = self.connections.get(accepted)
        sock: Any = accepted
        try:
            if self.tls is not None:
                sock = self._handshake(accepted, host, connection)
            if sock is not None:
                self._converse(sock, host, connection)
        finally:
            try:
                if sock is not None:
                    with contextlib.suppress(OSError, ValueError):
                        sock.close()
            finally:
                self.connections.forget(connection, accepted)

    def _handshake(self, accepted: socket.socket, host: str, connection: _Connection) -> ssl.SSLSocket | None:
        assert self.tls is not None
        try:
            tls = self.tls.wrap_socket(accepted, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError):
            return None
        connection.sock = tls
        try:
            tls.settimeout(self.limits.handshake_timeout_s)
            tls.do_handshake()
        except (OSError, ValueError) as error:  # a plain MLLP client, a timeout, a closed connection
            if self.log_rate.allow(("tls", host)):
                log.warning("TLS handshake with HL7 peer %s failed: %s", host, type(error).__name__)
            with contextlib.suppress(OSError, ValueError):
                tls.close()
            return None
        return tls

    def _converse(self, sock: Any, host: str, connection: _Connection) -> None:
        limits = self.limits
        buffer = FrameBuffer(limits.max_message_bytes)
        deadline = 0.0  # when the message being received must be complete
        ended = "closed by the peer"
        while not self._stopping.is_set() and not connection.evicted:
            now = time.monotonic()
            sock.settimeout(max(0.01, deadline - now) if buffer.partial else limits.idle_timeout_s)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                ended = "message not complete within the read timeout" if buffer.partial else "idle"
                break
            except (OSError, ValueError):
                ended = "connection error"
                break
            if not chunk:
                break
            was_partial = buffer.partial
            items = buffer.feed(chunk)
            connection.last_activity = time.monotonic()
            if buffer.partial and (not was_partial or items):
                deadline = connection.last_activity + limits.read_timeout_s
            connection.active = True
            try:
                for item in items:
                    self._reply(sock, self._answer(item))
            except (OSError, ValueError):
                ended = "the ACK could not be sent"
                break
            finally:
                connection.active = buffer.partial
        garbage = buffer.partial or buffer.dropped or buffer.truncated
        if garbage and self.log_rate.allow(("garbage", host)):
            log.warning(
                "HL7 connection from %s ended (%s): %d bytes outside MLLP frames dropped, %d frames "
                "cut short by a new start block%s",
                host,
                ended,
                buffer.dropped,
                buffer.truncated,
                ", a message left unfinished" if buffer.partial else "",
            )

    def _answer(self, item: bytes | Oversized) -> Answer:
        try:
            return self._read(item)
        except Exception as error:  # never a connection without an answer over a bug
            log.error("HL7 message not answered normally: %s; answered AE", type(error).__name__)
            ack = build_ack(None, AckCode.ERROR, "internal error", Condition.APPLICATION_INTERNAL_ERROR)
            return Answer(ack, AckCode.ERROR, "internal error")

    def _read(self, item: bytes | Oversized) -> Answer:
        if isinstance(item, Oversized):
            refusal = Refusal(
                AckCode.REJECT,
                Condition.DATA_TYPE_ERROR,
                f"the message is longer than {item.limit} bytes, the most this node takes "
                "(ECHO_HL7_MAX_MESSAGE_KB)",
            )
            return self.receiver.refuse(item.head, refusal)
        return self.receiver.answer(item)

    def _reply(self, sock: Any, answer: Answer) -> None:
        sock.settimeout(self.limits.read_timeout_s)
        sock.sendall(frame(answer.ack.translate(_FRAMING_BYTES).encode("utf-8")))


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Server TLS from ECHO_HL7_TLS_CERT / ECHO_HL7_TLS_KEY; None (plain MLLP) when unset."""
    if settings.hl7_tls_cert is None or settings.hl7_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.hl7_tls_cert, settings.hl7_tls_key)
    return context


def start_listener(settings: Settings, sessions: sessionmaker[Session]) -> Hl7Listener:
    """The listener on ECHO_HL7_LISTEN, serving; OSError if it cannot listen there."""
    assert settings.hl7_listen is not None, "ECHO_HL7_LISTEN is not set"
    policy = FacilityPolicy(settings.hl7_allowed_facilities)
    if policy.open_to_all:
        log.warning(
            "ECHO_HL7_ALLOWED_FACILITIES is empty: signed reports from any sending facility are accepted"
        )
    own = OwnNames(settings.hl7_sending_application, settings.hl7_sending_facility)
    listener = Hl7Listener(
        Receiver(sessions, policy, own),
        (settings.hl7_listen.host, settings.hl7_listen.port),
        tls=tls_context(settings),
        limits=ListenerLimits.from_settings(settings),
    )
    listener.start()
    log.info(
        "HL7 listener for signed reports on %s (%s)",
        settings.hl7_listen,
        "TLS" if listener.tls else "plain MLLP",
    )
    return listener
