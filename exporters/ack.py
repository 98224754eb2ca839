"""Reading an HL7 ACK and deciding what it means for the ORU it answers.

A small tolerant parser rather than hl7apy: receivers answer in whatever version and encoding
characters they like, and only MSH-1/2, MSA-1..3 and the ERR text matter here; a strict library
parse would turn a valid "AA" from an older RIS into a delivery failure.

Decisions (MSA-2 first, because an answer about another message says nothing about ours):
- MSA-2 differs from our control id: RETRY. The ACK belongs to another message (a stale or crossed
  answer), a protocol error; resending with the same control id lets the RIS drop a duplicate.
- MSA-1 AA or CA: DELIVERED. AE or CE: RETRY with the error text. AR or CR: FAILED with its text.
- Anything else (no MSH, no MSA, an unknown code): RETRY as a malformed ACK.
"""

from __future__ import annotations

import re

from exporters.hl7_escape import EncodingCharacters, unescape_text
from exporters.outcome import AckOutcome, SendStatus

_SEGMENTS = re.compile(r"\r\n|\r|\n")
_DELIVERED = {"AA", "CA"}
_RETRY = {"AE", "CE"}
_REJECTED = {"AR", "CR"}


def check_ack(payload: bytes, control_id: str) -> AckOutcome:
    """The outcome of one ACK frame's payload (the bytes between 0x0B and 0x1C 0x0D)."""
    raw = payload.decode("utf-8", errors="replace")
    segments = [segment for segment in _SEGMENTS.split(raw) if segment.strip()]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        return _malformed(raw, "no MSH segment")
    header = segments[0]
    declared = header[4:].split(header[3])[0]  # MSH-2: component, repetition, escape, subcomponent
    defaults = EncodingCharacters()
    encoding = EncodingCharacters(
        header[3],
        *(declared[index] if index < len(declared) else defaults[index + 1] for index in range(4)),
    )
    msa = [segment.split(encoding.field) for segment in segments if segment.startswith("MSA")]
    if not msa:
        return _malformed(raw, "no MSA segment")
    fields = [*msa[0], "", "", ""]
    ack_code = fields[1].strip().upper()
    acked_id = unescape_text(fields[2].strip(), encoding)
    text = _ack_text(fields[3], segments, encoding)

    def outcome(status: SendStatus, error: str | None) -> AckOutcome:
        return AckOutcome(status=status, error=error, ack_code=ack_code or None, ack_text=text, raw_ack=raw)

    if acked_id != control_id:
        return outcome(
            SendStatus.RETRY,
            f"protocol error: ACK is for control id {acked_id!r}, not {control_id!r}; resending",
        )
    if ack_code in _DELIVERED:
        return outcome(SendStatus.DELIVERED, None)
    if ack_code in _RETRY:
        return outcome(SendStatus.RETRY, f"receiver error ({ack_code}): {text or 'no error text'}")
    if ack_code in _REJECTED:
        return outcome(
            SendStatus.FAILED, f"receiver rejected the message ({ack_code}): {text or 'no error text'}"
        )
    return outcome(SendStatus.RETRY, f"malformed ACK: unknown acknowledgment code {ack_code!r}")


def _ack_text(msa_3: str, segments: list[str], encoding: EncodingCharacters) -> str | None:
    """MSA-3 and each ERR segment's human text, unescaped and joined with "; ".

    ERR differs by version: v2.5+ puts the user message in ERR-8, diagnostics in ERR-7 and the coded
    error in ERR-3 (code^text^system); v2.3/2.4 put the coded error in ERR-1's fourth component
    (code&text&system). The text of a coded error is preferred to its code.
    """
    parts = [msa_3]
    for segment in segments:
        if not segment.startswith("ERR"):
            continue
        fields = [*segment.split(encoding.field), "", "", "", "", "", "", "", "", ""]
        coded_v25 = [*fields[3].split(encoding.component), ""]
        location_v23 = [*fields[1].split(encoding.component), "", "", "", ""]
        coded_v23 = [*location_v23[3].split(encoding.subcomponent), ""]
        parts += [fields[8], fields[7], coded_v25[1] or coded_v25[0], coded_v23[1] or coded_v23[0]]
    texts: list[str] = []
    for part in parts:
        text = unescape_text(part.strip(), encoding)
        if text and text not in texts:
            texts.append(text)
    return "; ".join(texts) or None


def _malformed(raw: str, reason: str) -> AckOutcome:
    return AckOutcome(status=SendStatus.RETRY, error=f"malformed ACK: {reason}", raw_ack=raw)
