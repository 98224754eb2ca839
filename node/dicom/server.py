"""pynetdicom's threaded association server, with the accept thread doing nothing but accept.

pynetdicom wraps each accepted socket in TLS on the accept thread, handshake included, with no
timeout: one TCP connection that never says ClientHello stops every other caller. Here the accept
thread only records the connection (`ConnectionTable.opened`, which may close the oldest idle one to
make room); the TLS handshake runs on the connection's own thread, bounded by
ECHO_HANDSHAKE_TIMEOUT_SECONDS, and every socket then reads and writes with the idle timeout
(ECHO_IDLE_TIMEOUT_SECONDS), so a PDU that stops half-way ends the connection. Each association's
socket reads through a `PduLengthGuard`, its threads wait for work instead of polling
(`node.dicom.reactor`), and it shares the server's presentation contexts (`SharedContexts`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import AE
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from node.dicom.incoming import IncomingFiles
from node.dicom.limits import ConnectionTable, HostRate, PduLengthGuard
from node.dicom.reactor import make_event_driven

if TYPE_CHECKING:
    from pynetdicom.association import Association

log = logging.getLogger(__name__)


class SharedContexts(list):  # type: ignore[type-arg]
    """The server's supported presentation contexts, shared by its associations instead of deep-copied.

    pynetdicom deep-copies the server's contexts into every association it creates: 171 storage
    contexts with 3,064 transfer syntax UIDs, each UID validated again, ~15 ms of CPU, most of what
    an association that brings one image costs. Negotiation only reads them (pynetdicom's
    `negotiate_as_acceptor` builds new contexts for its answer), so each association gets its own list
    of the same context objects.
    """

    def __deepcopy__(self, memo: dict[int, object]) -> list[Any]:
        return list(self)


class GuardedRequestHandler(RequestHandler):
    server: EchoAssociationServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        server = self.server
        host, port = self.client_address[0], int(self.client_address[1])
        sock = assoc.dul.socket
        if sock is not None:
            sock.recv = PduLengthGuard(sock, server.ae.maximum_pdu_size, host, server.log_rate)  # type: ignore[method-assign]
        server.connections.attach(host, port, assoc)
        make_event_driven(assoc)
        return assoc


class EchoAssociationServer(ThreadedAssociationServer):
    # A connection's thread may sit in a TLS handshake: stopping the node must not wait for it.
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        *args: Any,
        connections: ConnectionTable,
        incoming: IncomingFiles,
        handshake_timeout_s: float,
        idle_timeout_s: float,
        **kwargs: Any,
    ) -> None:
        self.connections = connections
        self.incoming = incoming  # found by `node.dicom.incoming` through an association's `_server`
        self.handshake_timeout_s = handshake_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.log_rate = HostRate(per_minute=1)
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept only: no TLS here (see `finish_request`)."""
        assert self.socket is not None
        return self.socket.accept()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """False closes the connection at once (too many are waiting to ask for an association)."""
        return self.connections.opened(request, client_address[0], int(client_address[1]))

    def finish_request(self, request: Any, client_address: Any) -> None:
        """On the connection's own thread: the TLS handshake (bounded), then the association."""
        host, port = client_address[0], int(client_address[1])
        with contextlib.suppress(OSError):  # each response goes out at once, not after the peer's ACK
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            try:
                request = self._handshake(request, host, port)
            except (OSError, ValueError) as error:  # timeout, a plain caller, closed to make room
                if self.log_rate.allow(("tls", host)):
                    log.warning("TLS handshake with %s failed: %s", host, type(error).__name__)
                self.connections.forget(host, port)
                with contextlib.suppress(OSError):
                    request.close()
                return
        else:
            request.settimeout(self.idle_timeout_s)
        super().finish_request(request, client_address)

    def _handshake(self, request: socket.socket, host: str, port: int) -> ssl.SSLSocket:
        assert self.ssl_context is not None
        tls = self.ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        self.connections.use_socket(host, port, tls)  # the accepted socket object is detached now
        try:
            tls.settimeout(self.handshake_timeout_s)
            tls.do_handshake()
            tls.settimeout(self.idle_timeout_s)
        except BaseException:
            with contextlib.suppress(OSError):
                tls.close()
            raise
        return tls

    def shutdown_request(self, request: Any) -> None:
        self.connections.forget_socket(request)
        super().shutdown_request(request)


def start_server(
    ae: AE,
    address: tuple[str, int],
    *,
    evt_handlers: list[Any],
    ssl_context: ssl.SSLContext | None,
    connections: ConnectionTable,
    incoming: IncomingFiles,
    handshake_timeout_s: float,
    idle_timeout_s: float,
) -> EchoAssociationServer:
    """`AE.start_server(..., block=False)` with `EchoAssociationServer`; OSError if the port is taken."""
    server = cast(
        EchoAssociationServer,
        ae.make_server(
            address,
            ssl_context=ssl_context,
            evt_handlers=evt_handlers,
            server_class=EchoAssociationServer,  # type: ignore[arg-type]
            request_handler=GuardedRequestHandler,
            connections=connections,
            incoming=incoming,
            handshake_timeout_s=handshake_timeout_s,
            idle_timeout_s=idle_timeout_s,
        ),
    )
    server.contexts = SharedContexts(server.contexts)
    timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(target=server.serve_forever, name=f"AcceptorServer@{timestamp}", daemon=True)
    thread.start()
    ae._servers.append(server)  # AssociationServer.shutdown removes it from there
    return server
