"""The DICOM SCP: pynetdicom wiring only (AE, presentation contexts, TLS, handlers bound to their helpers).

What happens to a data set is `node.dicom.ingest`; who may connect is `node.dicom.access`; how many
connections, associations and bytes a caller may take is `node.dicom.limits`, checked before any
row is written; where a data set is streamed while it arrives is `node.dicom.incoming`; the server
that accepts without blocking is `node.dicom.server`; the audit rows are `node.dicom.association_log`;
the C-STORE status is `node.dicom.dimse_status`. Before it listens, the spool's files and the database
are made to agree (`node.dicom.recover`).
"""

from __future__ import annotations

import errno
import logging
import ssl
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.association import Association as PynetdicomAssociation
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from node.config.settings import Settings
from node.dicom import incoming as incoming_files
from node.dicom.access import AccessPolicy, Refusal
from node.dicom.association_log import AssociationLog, LiveAssociation, Peer
from node.dicom.dimse_status import refusal_status, store_status
from node.dicom.incoming import MB, IncomingFiles
from node.dicom.ingest import Ingestor
from node.dicom.limits import ConnectionTable, HostRate
from node.dicom.outcome import IngestOutcome, IngestResult, ReceivedInstance
from node.dicom.recover import recover_spool
from node.dicom.server import start_server
from node.store.states import AssociationOutcome
from node.store.uids import short_uid

log = logging.getLogger(__name__)

# Accepted for every storage SOP class, as sent: the file keeps its transfer syntax.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.JPEG2000MCLossless,
    uid.JPEG2000MC,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.RLELossless,
)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4: permanent, by the service user.
REJECTIONS: Mapping[Refusal, tuple[int, int, int]] = {
    Refusal.CALLING_AE_NOT_RECOGNISED: (0x01, 0x01, 0x03),
    Refusal.CALLED_AE_NOT_RECOGNISED: (0x01, 0x01, 0x07),
}
# Transient, by the presentation layer: temporary congestion (the admission check itself failed).
REJECT_CONGESTED = (0x02, 0x03, 0x01)
# Transient, by the presentation layer: local limit exceeded (too many associations, in all or per host).
REJECT_LIMIT = (0x02, 0x03, 0x02)

MAX_PDU_BYTES = 131_072  # what the node advertises and accepts in one P-DATA-TF (node.dicom.limits)
DIMSE_TIMEOUT_S = 120
CLOSE_GRACE_S = 2.0
# Our ConnectionTable decides; pynetdicom's own count includes idle sockets, so it must never bind.
PYNETDICOM_MAX_ASSOCIATIONS = 100_000
# Rows for refused callers (unknown AE titles) per host and minute; the rest are counted in the log.
REJECTED_ROWS_PER_HOST_MINUTE = 10


def max_per_host(settings: Settings) -> int:
    """Associations from one address at once, and connections from it waiting to ask for one."""
    return min(settings.max_associations_per_host or settings.max_associations, settings.max_associations)


def max_pending_connections(settings: Settings) -> int:
    """Connections that have not asked for an association yet, in all (refused past twice this)."""
    return max(16, 2 * settings.max_associations)


class Admission:
    """What EVT_REQUESTED needs to admit an association, and what ends with it."""

    def __init__(
        self,
        policy: AccessPolicy,
        audit: AssociationLog,
        connections: ConnectionTable,
        incoming: IncomingFiles,
    ) -> None:
        self.policy = policy
        self.audit = audit
        self.connections = connections
        self.incoming = incoming
        self.live = LiveAssociations()
        self.rejected_rows = HostRate(REJECTED_ROWS_PER_HOST_MINUTE)
        self.refusal_log = HostRate(per_minute=1)


class LiveAssociations:
    """pynetdicom's association -> our audit row, for the handlers of one server."""

    def __init__(self) -> None:
        self._rows: dict[PynetdicomAssociation, LiveAssociation] = {}
        self._lock = threading.Lock()

    def add(self, assoc: PynetdicomAssociation, live: LiveAssociation) -> None:
        with self._lock:
            self._rows[assoc] = live

    def get(self, assoc: PynetdicomAssociation) -> LiveAssociation | None:
        with self._lock:
            return self._rows.get(assoc)

    def pop(self, assoc: PynetdicomAssociation) -> LiveAssociation | None:
        with self._lock:
            return self._rows.pop(assoc, None)


def _peer(assoc: PynetdicomAssociation) -> Peer:
    request = assoc.requestor.primitive
    return Peer(
        calling_ae=str(request.calling_ae_title).strip(),
        called_ae=str(request.called_ae_title).strip(),
        host=assoc.requestor.address,
        port=assoc.requestor.port,
    )


def handle_requested(event: evt.Event, admission: Admission) -> None:
    """Admit or reject an A-ASSOCIATE-RQ before negotiation; any failure here rejects (fail closed)."""
    assoc = event.assoc
    try:
        rejection = _admit(assoc, admission)
    except Exception:  # pynetdicom would log and then accept: never let a bug open the door
        log.exception("admission check failed; rejecting the association")
        _forget(assoc, admission)
        rejection = REJECT_CONGESTED
    if rejection is not None:
        assoc.acse.send_reject(*rejection)
        assoc.kill()


def _admit(assoc: PynetdicomAssociation, admission: Admission) -> tuple[int, int, int] | None:
    """In-memory checks only (who, how many): admitting writes nothing, so a flood costs no rows."""
    peer = _peer(assoc)
    refusal = admission.policy.check(peer.calling_ae, peer.called_ae, peer.host)
    if refusal is not None:
        admission.connections.forget(peer.host, peer.port)
        if admission.rejected_rows.allow(peer.host):
            admission.audit.rejected(peer, refusal.value)
        elif admission.refusal_log.allow(("refused", peer.host)):
            log.warning(
                "rejected association from %s: %s (%d more not recorded in the database this minute)",
                peer.host,
                refusal.value,
                admission.rejected_rows.suppressed(peer.host),
            )
        return REJECTIONS[refusal]
    limit = admission.connections.admit(peer.host, peer.port, assoc)
    if limit is not None:
        if admission.refusal_log.allow(("limit", peer.host)):
            log.warning("rejected association from %s@%s: %s", peer.calling_ae, peer.host, limit)
        return REJECT_LIMIT
    admission.live.add(assoc, admission.audit.admitted(peer))  # no row yet: see node.dicom.association_log
    return None


def _forget(assoc: PynetdicomAssociation, admission: Admission) -> None:
    admission.connections.forget(assoc.requestor.address, assoc.requestor.port)


def handle_rejected(event: evt.Event, admission: Admission) -> None:
    """pynetdicom's own refusals after ours passed (its association cap is set out of reach)."""
    _forget(event.assoc, admission)
    row = admission.live.pop(event.assoc)
    if row is not None:
        admission.audit.ended(row, AssociationOutcome.REJECTED, "refused by the DICOM library")


def handle_ended(event: evt.Event, admission: Admission) -> None:
    _forget(event.assoc, admission)
    admission.incoming.discard(event.assoc)
    row = admission.live.pop(event.assoc)
    if row is None:
        return
    if event.event is evt.EVT_RELEASED:
        admission.audit.ended(row, AssociationOutcome.RELEASED)
    else:
        admission.audit.ended(row, AssociationOutcome.ABORTED, "aborted")


def handle_connection_closed(event: evt.Event, admission: Admission) -> None:
    """The fallback for a connection that died without A-RELEASE or A-ABORT.

    This event comes from the network thread, while EVT_RELEASED/EVT_ABORTED come from the
    association's thread and can arrive a moment later; so look again after a grace period.
    """
    _forget(event.assoc, admission)
    timer = threading.Timer(CLOSE_GRACE_S, _close_if_still_open, [event.assoc, admission])
    timer.daemon = True
    timer.start()


def _close_if_still_open(assoc: PynetdicomAssociation, admission: Admission) -> None:
    admission.incoming.discard(assoc)
    row = admission.live.pop(assoc)
    if row is not None:
        admission.audit.ended(row, AssociationOutcome.ABORTED, "connection closed without release")


def handle_echo(event: evt.Event) -> int:
    return 0x0000


def handle_store(event: evt.Event, ingestor: Ingestor, admission: Admission, settings: Settings) -> Dataset:
    request = event.request
    row = admission.live.get(event.assoc)
    received = ReceivedInstance(
        sop_class_uid=str(request.AffectedSOPClassUID),
        sop_instance_uid=str(request.AffectedSOPInstanceUID),
        transfer_syntax_uid=str(event.context.transfer_syntax),
        encoded=b"",
        association=row,
    )
    status, comment, stored = _store(event, received, ingestor, admission, settings)
    if row is not None:
        row.count(stored)
    response = Dataset()
    response.Status = status
    if status != 0x0000:
        response.ErrorComment = comment
    return response


def _store(
    event: evt.Event, received: ReceivedInstance, ingestor: Ingestor, admission: Admission, settings: Settings
) -> tuple[int, str, bool]:
    """(status, comment, stored) for one C-STORE, from the file the data set was streamed to."""
    try:
        streamed = admission.incoming.take(event.dataset_path)
    except AttributeError:  # not streamed (chunked receiving is off): the bytes are in memory
        result = ingestor.store(replace(received, encoded=event.encoded_dataset()))
        return (*store_status(result), result.stored)
    if streamed is None:  # streamed by pynetdicom itself, not by us: should not happen
        result = ingestor.store_file(received, Path(event.dataset_path))
        return (*store_status(result), result.stored)
    try:
        streamed.finish()
        if streamed.error is not None:
            result = write_failed(streamed.error)
            log.error("instance %s not stored: %s", short_uid(received.sop_instance_uid), result.detail)
        elif streamed.refusal is not None:
            status, comment = refusal_status(streamed.refusal, settings.max_instance_mb, settings.min_free_mb)
            log.warning("refused instance %s: %s", short_uid(received.sop_instance_uid), comment)
            return status, comment, False
        else:
            result = ingestor.store_file(received, streamed.path)
        return (*store_status(result), result.stored)
    finally:
        streamed.discard()  # gone already when it was moved into the spool


def write_failed(error: OSError) -> IngestResult:
    """The disk refused a streamed data set: reported as ingest reports a failed write."""
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    detail = f"cannot write file: {error.strerror or type(error).__name__}"
    return IngestResult(IngestOutcome.DISK_FULL if full else IngestOutcome.DISK_ERROR, detail)


def build_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = PYNETDICOM_MAX_ASSOCIATIONS
    ae.maximum_pdu_size = MAX_PDU_BYTES
    ae.acse_timeout = settings.handshake_timeout_seconds  # how long a connection may wait to ask
    ae.dimse_timeout = DIMSE_TIMEOUT_S
    ae.network_timeout = settings.idle_timeout_seconds
    ae.add_supported_context(Verification)
    # One supported context per SOP class with a list of syntaxes: the 128-context limit is on
    # requested contexts only, so every storage class fits.
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, list(TRANSFER_SYNTAXES))
    return ae


def narrate_only_if_logged() -> None:
    """Bind pynetdicom's standard handlers, which describe every PDU and DIMSE message at INFO and
    DEBUG, only when its logger prints those (below DEBUG the node keeps it at WARNING,
    `node.config.logs`): pynetdicom's own switch, process-wide, read as each association is created."""
    narrated = logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    _config.LOG_HANDLER_LEVEL = "standard" if narrated else "none"


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Server TLS from tls_cert/tls_key; with tls_ca, callers must present a certificate it signed."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=settings.tls_ca)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    context.verify_mode = ssl.CERT_REQUIRED if settings.tls_ca else ssl.CERT_NONE
    return context


def start_scp(
    settings: Settings,
    ingestor: Ingestor,
    audit: AssociationLog,
    bind_address: str = "0.0.0.0",
) -> ThreadedAssociationServer:
    """Re-scan the spool, then listen on Settings.port in background threads; OSError if the port is taken."""
    policy = AccessPolicy(settings.ae_title, settings.allowed_callers)
    if policy.open_to_all:
        log.warning("ECHO_ALLOWED_CALLERS is empty: any calling AE title is accepted")
    connections = ConnectionTable(
        settings.max_associations, max_per_host(settings), max_pending_connections(settings)
    )
    try:  # before anyone can send: rows a power cut took are restored from the spool
        recover_spool(ingestor)
    except Exception:  # a database down now must not keep the node from listening; the next start retries
        log.exception(
            "the spool re-scan failed; instances whose rows were lost are restored at the next start"
        )
    incoming = IncomingFiles(settings.spool_dir, settings.max_instance_mb * MB, settings.min_free_mb * MB)
    incoming_files.install()
    narrate_only_if_logged()
    admission = Admission(policy, audit, connections, incoming)
    handlers = [
        (evt.EVT_REQUESTED, handle_requested, [admission]),
        (evt.EVT_REJECTED, handle_rejected, [admission]),
        (evt.EVT_RELEASED, handle_ended, [admission]),
        (evt.EVT_ABORTED, handle_ended, [admission]),
        (evt.EVT_CONN_CLOSE, handle_connection_closed, [admission]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [ingestor, admission, settings]),
    ]
    ae = build_ae(settings)
    return start_server(
        ae,
        (bind_address, settings.port),
        evt_handlers=handlers,
        ssl_context=tls_context(settings),
        connections=connections,
        incoming=incoming,
        handshake_timeout_s=settings.handshake_timeout_seconds,
        idle_timeout_s=settings.idle_timeout_seconds,
    )
