"""C-STORE SCU: one association per batch, one outcome per dataset, read from the PACS's answer.

A dataset counts as delivered only when the PACS answered success (0x0000) or a warning; everything
else becomes a retry or a failure with its reason and status code (see `store_status`). Network
trouble (refused, timed out, rejected, aborted) is always a retry: the outbox resends later.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association

from exporters.ae_title import check_ae_title
from exporters.outcome import SendStatus, StoreOutcome
from exporters.store_status import classify_store_status
from exporters.tls_errors import probe_handshake

log = logging.getLogger(__name__)

_NO_ANSWER = "no C-STORE response (association aborted or timed out)"
_NOT_SENT = "not sent: the association ended before this dataset"
_MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are the odd numbers 1..255


class StoreDestination(Protocol):
    """Any object with these attributes names a PACS (node.config.settings.DicomPeer is one)."""

    @property
    def ae_title(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


class StorePeer(NamedTuple):
    ae_title: str
    host: str
    port: int


@dataclass
class _AssociationEvents:
    """The PDUs the peer sent before the association was (or was not) established.

    Read from received PDUs rather than ACSE primitives: pynetdicom also raises a provider abort
    locally when the connection fails or times out, and only a received PDU proves the peer spoke.
    Read from the raw bytes (EVT_DATA_RECV), not pynetdicom's decoded PDU: pynetdicom cannot decode
    a rejection whose reason PS3.8 does not define, and would report it as a timeout.
    """

    connected: bool = False
    rejection: str | None = None
    aborted_by_peer: str | None = None

    def on_open(self, event: evt.Event) -> None:
        self.connected = True

    def on_data(self, event: evt.Event) -> None:
        data = bytes(event.data)
        if len(data) < 10:
            return
        if data[0] == _A_ASSOCIATE_RJ:  # PS3.8 9.3.4: result, source, reason in bytes 8-10
            self.rejection = describe_rejection(data[7], data[8], data[9])
        elif data[0] == _A_ABORT:  # PS3.8 9.3.8: source and reason in bytes 9-10
            self.aborted_by_peer = describe_abort(data[8], data[9])


_A_ASSOCIATE_RJ = 0x03
_A_ABORT = 0x07
_ABORT_SOURCES = {0: "DUL service-user", 1: "Reserved", 2: "DUL service-provider"}
_ABORT_REASONS = {
    0: "No reason given",
    1: "Unrecognised PDU",
    2: "Unexpected PDU",
    4: "Unrecognised PDU parameter",
    5: "Unexpected PDU parameter",
    6: "Invalid PDU parameter value",
}


def describe_abort(source: int, reason: int) -> str:
    """An A-ABORT in words (the reason is only meaningful when the service provider aborted)."""
    source_text = _ABORT_SOURCES.get(source, f"{source} (not defined by PS3.8)")
    reason_text = (
        _ABORT_REASONS.get(reason, f"{reason} (not defined by PS3.8)") if source == 2 else "No reason given"
    )
    return f"source {source_text}, reason {reason_text}"


# PS3.8 9.3.4: A-ASSOCIATE-RJ result, source and reason/diagnostic (per source), worded as pynetdicom
# words them.
_RJ_RESULTS = {1: "Rejected (Permanent)", 2: "Rejected (Transient)"}
_RJ_SOURCES = {
    1: "DUL service-user",
    2: "DUL service-provider (ACSE related)",
    3: "DUL service-provider (presentation related)",
}
_RJ_REASONS = {
    1: {
        1: "No reason given",
        2: "Application context name not supported",
        3: "Calling AE title not recognised",
        7: "Called AE title not recognised",
    },
    2: {1: "No reason given", 2: "Protocol version not supported"},
    3: {1: "Temporary congestion", 2: "Local limit exceeded"},
}


def describe_rejection(result: int, source: int, reason: int) -> str:
    """An A-ASSOCIATE-RJ in words: result, source and reason. A value PS3.8 does not define (some
    PACS send them, and pynetdicom cannot word them) is named with its number instead of lost."""
    result_text = _RJ_RESULTS.get(result, f"Rejected (result {result}, not defined by PS3.8)")
    source_text = _RJ_SOURCES.get(source, f"{source} (not defined by PS3.8)")
    reason_text = _RJ_REASONS.get(source, {}).get(reason, f"{reason} (reserved or not defined by PS3.8)")
    return f"{result_text}, source {source_text}, reason {reason_text}"


def send_datasets(
    datasets: Sequence[Dataset],
    peer: StoreDestination,
    *,
    calling_ae: str,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> list[StoreOutcome]:
    """Send every dataset over one association to `peer`; outcomes are in the order of `datasets`.

    `timeout` bounds the TCP connect, the association negotiation and each C-STORE response.
    """
    _check_arguments(datasets, peer, calling_ae, timeout, tls)
    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, syntaxes in _presentation_contexts(datasets).items():
        ae.add_requested_context(sop_class, syntaxes)

    events = _AssociationEvents()
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        tls_args=(tls, peer.host) if tls is not None else None,
        evt_handlers=[(evt.EVT_CONN_OPEN, events.on_open), (evt.EVT_DATA_RECV, events.on_data)],
    )
    if not assoc.is_established:
        status, reason = _association_failure(assoc, events, peer, timeout, tls)
        log.warning(
            "C-STORE to %s:%s not sent (%d datasets): %s", peer.host, peer.port, len(datasets), reason
        )
        return [_undelivered(dataset, status, reason) for dataset in datasets]

    outcomes: list[StoreOutcome] = []
    answer_lost = False  # a C-STORE went unanswered: the association is gone or hung
    try:
        for dataset in datasets:
            if answer_lost or not assoc.is_established:
                outcomes.append(_undelivered(dataset, SendStatus.RETRY, _NOT_SENT))
                continue
            outcomes.append(_store_one(assoc, dataset))
            answer_lost = outcomes[-1].error == _NO_ANSWER
    finally:
        if assoc.is_established:
            assoc.abort() if answer_lost else assoc.release()
    delivered = sum(outcome.delivered for outcome in outcomes)
    log.info("C-STORE to %s:%s: %d of %d delivered", peer.host, peer.port, delivered, len(outcomes))
    return outcomes


def _check_arguments(
    datasets: Sequence[Dataset], peer: StoreDestination, calling_ae: str, timeout: float, tls: object
) -> None:
    if isinstance(datasets, Dataset) or not isinstance(datasets, Sequence) or not datasets:
        raise ValueError("datasets must be a non-empty sequence of pydicom datasets")
    for index, dataset in enumerate(datasets):
        if not isinstance(dataset, Dataset):
            raise TypeError(f"datasets[{index}] must be a pydicom Dataset, got {type(dataset).__name__}")
        for keyword in ("SOPClassUID", "SOPInstanceUID"):
            if not dataset.get(keyword):
                raise ValueError(f"datasets[{index}] has no {keyword}")
        if not getattr(dataset, "file_meta", None) or not dataset.file_meta.get("TransferSyntaxUID"):
            raise ValueError(f"datasets[{index}] has no file_meta.TransferSyntaxUID: its encoding is unknown")
    for argument, title in (("calling_ae", calling_ae), ("peer.ae_title", peer.ae_title)):
        check_ae_title(title, argument)
    if not isinstance(peer.host, str) or not peer.host:
        raise ValueError(f"peer.host must be a non-empty string, got {peer.host!r}")
    if isinstance(peer.port, bool) or not isinstance(peer.port, int) or not 0 < peer.port < 65536:
        raise ValueError(f"peer.port must be between 1 and 65535, got {peer.port!r}")
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if tls is not None and not isinstance(tls, ssl.SSLContext):
        raise TypeError(f"tls must be an ssl.SSLContext or None, got {type(tls).__name__}")


def _presentation_contexts(datasets: Sequence[Dataset]) -> dict[str, list[str]]:
    """One context per SOP class: each dataset's own transfer syntax, then the uncompressed ones."""
    contexts: dict[str, list[str]] = {}
    for dataset in datasets:
        syntaxes = contexts.setdefault(str(dataset.SOPClassUID), [])
        for syntax in (
            str(dataset.file_meta.TransferSyntaxUID),
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
        ):
            if syntax not in syntaxes:
                syntaxes.append(syntax)
    if len(contexts) > _MAX_CONTEXTS:
        raise ValueError(
            f"datasets hold {len(contexts)} SOP classes; one association carries at most {_MAX_CONTEXTS}"
        )
    return contexts


def _association_failure(
    assoc: Association,
    events: _AssociationEvents,
    peer: StoreDestination,
    timeout: float,
    tls: ssl.SSLContext | None,
) -> tuple[SendStatus, str]:
    where = f"{peer.ae_title}@{peer.host}:{peer.port}"
    if events.rejection is not None:
        return SendStatus.RETRY, f"association rejected by {where}: {events.rejection}"
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        return SendStatus.FAILED, f"{where} accepted none of the proposed SOP classes / transfer syntaxes"
    if events.aborted_by_peer is not None:
        return (
            SendStatus.RETRY,
            f"association aborted by {where} during negotiation ({events.aborted_by_peer})",
        )
    if events.connected:
        return (
            SendStatus.RETRY,
            f"timeout or disconnect: no answer to the association request from {where} within {timeout}s",
        )
    if tls is not None:  # pynetdicom logs a failed handshake as "unable to connect": find out
        handshake = probe_handshake(peer.host, peer.port, tls, timeout, where, "DICOM")
        if handshake is not None:
            return SendStatus.RETRY, handshake
    return (
        SendStatus.RETRY,
        f"could not connect to {where} (refused, unreachable or timed out after {timeout}s)",
    )


def _store_one(assoc: Association, dataset: Dataset) -> StoreOutcome:
    sop_class = UID(dataset.SOPClassUID)
    try:
        response = assoc.send_c_store(dataset)
    except ValueError as error:  # no accepted presentation context, or the dataset cannot be encoded
        return _undelivered(dataset, SendStatus.FAILED, f"not sent ({sop_class.name}): {error}")
    except RuntimeError:  # the association ended between the check and the send
        return _undelivered(dataset, SendStatus.RETRY, _NOT_SENT)
    if "Status" not in response:
        return _undelivered(dataset, SendStatus.RETRY, _NO_ANSWER)
    code = int(response.Status)
    status, reason = classify_store_status(code)
    comment = response.get("ErrorComment")
    text = (
        f"C-STORE status 0x{code:04X}"
        + (f" {reason}" if reason else "")
        + (f": {comment}" if comment else "")
    )
    if status is SendStatus.DELIVERED:
        return StoreOutcome(
            status=status,
            sop_instance_uid=str(dataset.SOPInstanceUID),
            status_code=code,
            warning=text if code != 0x0000 else None,
        )
    return StoreOutcome(
        status=status, error=text, sop_instance_uid=str(dataset.SOPInstanceUID), status_code=code
    )


def _undelivered(dataset: Dataset, status: SendStatus, reason: str) -> StoreOutcome:
    return StoreOutcome(status=status, error=reason, sop_instance_uid=str(dataset.SOPInstanceUID))
