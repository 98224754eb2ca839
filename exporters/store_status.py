"""One table from C-STORE response status to delivery outcome, each row with its reason (PS3.4 B.2.3).

Retry only what a later resend can fix (the PACS out of resources, busy, or cancelling); a dataset
the PACS cannot accept or understand fails for good and the operator resends after fixing it.
"""

from __future__ import annotations

from pynetdicom.status import code_to_category

from exporters.outcome import SendStatus

# (status, reason) for specific codes; ranges and categories are handled in classify_store_status
_KNOWN = {
    0x0000: (SendStatus.DELIVERED, None),
    0xB000: (SendStatus.DELIVERED, "coercion of data elements"),
    0xB007: (SendStatus.DELIVERED, "data set does not match SOP class"),
    0xB006: (SendStatus.DELIVERED, "elements discarded"),
    0x0110: (SendStatus.RETRY, "processing failure at the PACS"),
    0x0122: (SendStatus.FAILED, "SOP class not supported by the PACS"),
    0x0124: (SendStatus.FAILED, "not authorised by the PACS"),
    0x0211: (SendStatus.FAILED, "unrecognised operation"),
    0x0212: (SendStatus.FAILED, "mistyped argument"),
    0xFE00: (SendStatus.RETRY, "operation cancelled by the PACS"),
}


def classify_store_status(code: int) -> tuple[SendStatus, str | None]:
    """The outcome of one C-STORE status: (status, reason); on success the reason is the warning, if any.

    The reason never repeats the code: the sender reports both.
    """
    if code in _KNOWN:
        status, reason = _KNOWN[code]
        return status, reason
    if 0xA700 <= code <= 0xA7FF:
        return SendStatus.RETRY, "out of resources"
    if 0xA900 <= code <= 0xA9FF:
        return SendStatus.FAILED, "data set does not match SOP class"
    if 0xC000 <= code <= 0xCFFF:
        return SendStatus.FAILED, "cannot understand"
    category = code_to_category(code)
    if category == "Warning":
        return SendStatus.DELIVERED, "warning"
    return SendStatus.FAILED, f"{category.lower()} status"
