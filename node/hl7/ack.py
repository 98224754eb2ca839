"""The answer to every inbound message: an HL7 ACK built with hl7apy (original acknowledgment mode).

- MSH: the received MSH-3/4 and MSH-5/6 swapped (our own names where the sender left them empty),
  MSH-9 ACK^<received trigger>^ACK, a fresh MSH-10, the received processing id and version.
- MSA-1: AA stored (or stored before: a duplicate), AE an application error (the message could not
  be read, or the node could not store it now: the sender should send it again later), AR refused
  (wrong type, not final, sender not allowed, no accession or Study Instance UID: sending the same
  message again will be refused again). This is the convention the node's own MLLP client follows
  (`exporters.ack`: AE retry, AR permanent) and the one the issue asks for.
- MSA-2: the received MSH-10, MSA-3: the reason (80 characters at most, as MSA-3 allows).
- ERR for AE/AR: the HL7 table 0357 condition (ERR-3 code^text^HL70357, ERR-4 severity E, ERR-8
  the reason) from v2.5 on; ERR-1 (^^^code&text&HL70357) before.

The ACK is written in the version of the message it answers when hl7apy writes that version
faithfully (2.1 to 2.7); otherwise (2.8.x, whose ERR hl7apy misplaces, or an unknown version) 2.5.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message

from exporters.hl7_escape import escape_text
from exporters.oru import new_control_id

ACK_VERSIONS = ("2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7")
DEFAULT_VERSION = "2.5.1"
MSA_TEXT_LENGTH = 80
ERR_TEXT_LENGTH = 250


class AckCode(StrEnum):
    ACCEPT = "AA"
    ERROR = "AE"  # could not read or store it now: send again later
    REJECT = "AR"  # refused: the same message will be refused again


class Condition(IntEnum):
    """HL7 table 0357, message error condition codes (the ones this listener answers)."""

    SEGMENT_SEQUENCE_ERROR = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE_ERROR = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT_CODE = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION_ID = 203
    UNKNOWN_KEY_IDENTIFIER = 204
    APPLICATION_INTERNAL_ERROR = 207

    @property
    def text(self) -> str:
        return self.name.replace("_", " ").capitalize()  # as table 0357 words it


class Refusal(Exception):
    """Why a message is answered AE or AR; `reason` is one line for MSA-3 / ERR-8 (no log)."""

    def __init__(self, code: AckCode, condition: Condition, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.condition = condition
        self.reason = reason


@dataclass(frozen=True)
class Header:
    """What the ACK needs from the received MSH, unescaped; empty strings where the sender sent none."""

    sending_application: str = ""
    sending_facility: str = ""  # MSH-4 HD.1 (HD.2 when HD.1 is empty): the allow-list's value
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""  # MSH-10
    processing_id: str = ""  # MSH-11.1
    version: str = ""  # MSH-12.1
    message_code: str = ""  # MSH-9.1, e.g. ORU
    trigger: str = ""  # MSH-9.2, e.g. R01

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger}"


@dataclass(frozen=True)
class OwnNames:
    """The node's MSH-3/4, used where the received MSH-5/6 is empty."""

    application: str = "ECHO"
    facility: str = "ECHO"


def ack_version(received: str) -> str:
    return received if received in ACK_VERSIONS else DEFAULT_VERSION


def build_ack(
    header: Header | None,
    code: AckCode,
    reason: str = "",
    condition: Condition | None = None,
    *,
    own: OwnNames = OwnNames(),
    now: datetime | None = None,
) -> str:
    """The ACK as ER7 (segments ended by CR), ready for `exporters.mllp.frame` after encoding.

    `header` None: the message had no readable MSH; the ACK then names no message in MSA-2.
    """
    header = header or Header()
    version = ack_version(header.version)
    message = Message("ACK", version=version, validation_level=VALIDATION_LEVEL.TOLERANT)
    msh = message.msh
    msh.msh_3 = escape_text(header.receiving_application or own.application)
    msh.msh_4 = escape_text(header.receiving_facility or own.facility)
    if header.sending_application:
        msh.msh_5 = escape_text(header.sending_application)
    if header.sending_facility:
        msh.msh_6 = escape_text(header.sending_facility)
    msh.msh_7 = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S%z")
    msh.msh_9 = f"ACK^{escape_text(header.trigger)}^ACK" if header.trigger else "ACK"
    msh.msh_10 = new_control_id()
    msh.msh_11 = escape_text(header.processing_id or "P")
    msa = message.msa
    msa.msa_1 = code.value
    if header.control_id:
        msa.msa_2 = escape_text(header.control_id)
    text = " ".join(reason.split())
    if text:
        msa.msa_3 = escape_text(_shorten(text, MSA_TEXT_LENGTH))
    if code is not AckCode.ACCEPT:
        condition = condition or Condition.APPLICATION_INTERNAL_ERROR
        err = message.add_segment("ERR")
        if version >= "2.5":
            err.err_3 = f"{condition.value}^{escape_text(condition.text)}^HL70357"
            err.err_4 = "E"
            if text:
                err.err_8 = escape_text(_shorten(text, ERR_TEXT_LENGTH))
        else:
            err.err_1 = f"^^^{condition.value}&{escape_text(condition.text)}&HL70357"
    return message.to_er7() + "\r"


def _shorten(text: str, length: int) -> str:
    """At most `length` characters once escaped (the cut never splits an escape sequence)."""
    if len(escape_text(text)) <= length:
        return text
    while text and len(escape_text(text + "...")) > length:
        text = text[:-1]
    return text + "..."
