"""Field values out of hl7apy segments, unescaped with the message's own encoding characters.

`Fields.value` reads one component through hl7apy's `to_er7` (identifiers, codes, statuses);
`Fields.text_lines` reads a text field from hl7apy's stored values, because `to_er7` escapes the
escape character of a sequence hl7apy does not know (FT's \\.br\\ would come back as text).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from hl7apy.base_datatypes import BaseDataType

from exporters.hl7_escape import EncodingCharacters, unescape_text

_DTM = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")


class Fields:
    """Field values out of hl7apy segments, unescaped with the message's own encoding characters."""

    def __init__(self, encoding: EncodingCharacters) -> None:
        self.encoding = encoding

    def repetitions(self, segment: Any, number: int) -> list[Any]:
        try:
            return list(getattr(segment, f"{segment.name.lower()}_{number}"))
        except Exception:  # a field this version does not define
            return []

    def value(self, segment: Any, number: int, component: int = 1) -> str:
        """One component of the field's first repetition (subcomponents kept), unescaped."""
        repetitions = self.repetitions(segment, number)
        if not repetitions:
            return ""
        parts = repetitions[0].to_er7().split(self.encoding.component)
        return unescape_text(parts[component - 1], self.encoding).strip() if component <= len(parts) else ""

    def text_lines(self, segment: Any, number: int) -> list[str]:
        """A text field's lines: every repetition, FT formatting as line breaks, escapes undone."""
        escape = self.encoding.escape
        pattern = re.escape(escape)
        skip = re.compile(rf"{pattern}\.sp[^{pattern}]*{pattern}")  # \.sp\ and \.sp2\: new line(s)
        layout = re.compile(rf"{pattern}\.(in|ti|sk|ce|fi|nf)[^{pattern}]*{pattern}")  # indents, fill
        lines: list[str] = []
        for repetition in self.repetitions(segment, number):
            raw = skip.sub(lambda _: f"{escape}.br{escape}", self._raw(repetition, self.encoding.component))
            lines += unescape_text(layout.sub("", raw), self.encoding).splitlines()
        return lines

    def _raw(self, element: Any, separator: str) -> str:
        """The text as received: hl7apy's to_er7 would escape an escape sequence it does not know."""
        if not element.children:
            value = element.value
            return value.value if isinstance(value, BaseDataType) else str(value or "")
        return separator.join(self._raw(child, self.encoding.subcomponent) for child in element.children)


def hl7_timestamp(value: str) -> datetime | None:
    """An HL7 DTM to the day at least; without an offset it is the node's local time."""
    match = _DTM.match(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    if offset is None:
        return moment.astimezone()
    sign = -1 if offset[0] == "-" else 1
    zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    return moment.replace(tzinfo=zone)
