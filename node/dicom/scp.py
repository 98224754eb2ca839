"""The DICOM SCP: pynetdicom wiring only (AE, presentation contexts, TLS, handlers bound to their helpers).

What happens to a data set is `node.dicom.ingest`; who may connect is `node.dicom.access`; the audit rows are
`node.dicom.association_log`; the C-STORE status is `node.dicom.dimse_status`.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Mapping

from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association as PynetdicomAssociation
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.exc import SQLAlchemyError

from node.config.settings import Settings
from node.dicom.access import AccessPolicy, Refusal
from node.dicom.association_log import AssociationLog, LiveAssociation, Peer
from node.dicom.dimse_status import store_status
from node.dicom.ingest import Ingestor, ReceivedInstance
from node.store.states import AssociationOutcome

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
# Transient, by the presentation layer: temporary congestion (we cannot admit or audit it now).
REJECT_CONGESTED = (0x02, 0x03, 0x01)

MAX_PDU_BYTES = 131_072
ACSE_TIMEOUT_S = 30
DIMSE_TIMEOUT_S = 120
NETWORK_TIMEOUT_S = 120
CLOSE_GRACE_S = 2.0


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


def handle_requested(
    event: evt.Event, policy: AccessPolicy, audit: AssociationLog, live: LiveAssociations
) -> None:
    """Admit or reject an A-ASSOCIATE-RQ before negotiation; any failure here rejects (fail closed)."""
    assoc = event.assoc
    try:
        rejection = _admit(assoc, policy, audit, live)
    except Exception:  # pynetdicom would log and then accept: never let a bug open the door
        log.exception("admission check failed; rejecting the association")
        rejection = REJECT_CONGESTED
    if rejection is not None:
        assoc.acse.send_reject(*rejection)
        assoc.kill()


def _admit(
    assoc: PynetdicomAssociation, policy: AccessPolicy, audit: AssociationLog, live: LiveAssociations
) -> tuple[int, int, int] | None:
    peer = _peer(assoc)
    refusal = policy.check(peer.calling_ae, peer.called_ae, peer.host)
    if refusal is not None:
        audit.rejected(peer, refusal.value)
        return REJECTIONS[refusal]
    try:
        live.add(assoc, audit.opened(peer))
    except SQLAlchemyError as error:
        log.error("refusing association from %s: database error %s", peer.calling_ae, type(error).__name__)
        return REJECT_CONGESTED
    return None


def handle_rejected(event: evt.Event, audit: AssociationLog, live: LiveAssociations) -> None:
    """pynetdicom's own refusals after ours passed: too many associations at once."""
    row = live.pop(event.assoc)
    if row is not None:
        audit.ended(row, AssociationOutcome.REJECTED, "local limit of concurrent associations exceeded")


def handle_ended(event: evt.Event, audit: AssociationLog, live: LiveAssociations) -> None:
    row = live.pop(event.assoc)
    if row is None:
        return
    if event.event is evt.EVT_RELEASED:
        audit.ended(row, AssociationOutcome.RELEASED)
    else:
        audit.ended(row, AssociationOutcome.ABORTED, "aborted")


def handle_connection_closed(event: evt.Event, audit: AssociationLog, live: LiveAssociations) -> None:
    """The fallback for a connection that died without A-RELEASE or A-ABORT.

    This event comes from the network thread, while EVT_RELEASED/EVT_ABORTED come from the
    association's thread and can arrive a moment later; so look again after a grace period.
    """
    timer = threading.Timer(CLOSE_GRACE_S, _close_if_still_open, [event.assoc, audit, live])
    timer.daemon = True
    timer.start()


def _close_if_still_open(assoc: PynetdicomAssociation, audit: AssociationLog, live: LiveAssociations) -> None:
    row = live.pop(assoc)
    if row is not None:
        audit.ended(row, AssociationOutcome.ABORTED, "connection closed without release")


def handle_echo(event: evt.Event) -> int:
    return 0x0000


def handle_store(event: evt.Event, ingestor: Ingestor, live: LiveAssociations) -> Dataset:
    request = event.request
    row = live.get(event.assoc)
    result = ingestor.store(
        ReceivedInstance(
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            encoded=event.encoded_dataset(),
            association_id=row.id if row else None,
        )
    )
    if row is not None:
        row.count(result.stored)
    status, comment = store_status(result)
    response = Dataset()
    response.Status = status
    if status != 0x0000:
        response.ErrorComment = comment
    return response


def build_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = MAX_PDU_BYTES
    ae.acse_timeout = ACSE_TIMEOUT_S
    ae.dimse_timeout = DIMSE_TIMEOUT_S
    ae.network_timeout = NETWORK_TIMEOUT_S
    ae.add_supported_context(Verification)
    # One supported context per SOP class with a list of syntaxes: the 128-context limit is on
    # requested contexts only, so every storage class fits.
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, list(TRANSFER_SYNTAXES))
    return ae


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
    """Start listening on Settings.port in background threads; OSError if the port is taken."""
    policy = AccessPolicy(settings.ae_title, settings.allowed_callers)
    if policy.open_to_all:
        log.warning("ECHO_ALLOWED_CALLERS is empty: any calling AE title is accepted")
    live = LiveAssociations()
    handlers = [
        (evt.EVT_REQUESTED, handle_requested, [policy, audit, live]),
        (evt.EVT_REJECTED, handle_rejected, [audit, live]),
        (evt.EVT_RELEASED, handle_ended, [audit, live]),
        (evt.EVT_ABORTED, handle_ended, [audit, live]),
        (evt.EVT_CONN_CLOSE, handle_connection_closed, [audit, live]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [ingestor, live]),
    ]
    ae = build_ae(settings)
    return ae.start_server(
        (bind_address, settings.port),
        block=False,
        evt_handlers=handlers,
        ssl_context=tls_context(settings),
    )
