"""HL7 v2 escape sequences (v2.5.1 chapter 2.7): text in, field-safe text out, and back.

Written here rather than left to hl7apy: hl7apy escapes a backslash only when it does not already
look like an escape sequence, so a report that literally contains "\\F\\" would come out as a field
separator at the RIS. This escaper always escapes the escape character first.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class EncodingCharacters(NamedTuple):
    """MSH-1 and MSH-2; a receiver may choose others, so an ACK is read with its own."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


DEFAULT_ENCODING = EncodingCharacters()
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def escape_text(text: str, encoding: EncodingCharacters = DEFAULT_ENCODING) -> str:
    """Escape | ^ & ~ \\ as \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, and line breaks as \\.br\\."""
    esc = encoding.escape
    text = text.replace(esc, f"{esc}E{esc}")
    for char, code in (
        (encoding.field, "F"),
        (encoding.component, "S"),
        (encoding.subcomponent, "T"),
        (encoding.repetition, "R"),
    ):
        text = text.replace(char, f"{esc}{code}{esc}")
    line_break = f"{esc}.br{esc}"
    return _LINE_BREAK.sub(lambda _: line_break, text)


def unescape_text(text: str, encoding: EncodingCharacters = DEFAULT_ENCODING) -> str:
    """The inverse of `escape_text`; highlighting (\\H\\, \\N\\) is dropped, \\Xhh..\\ decoded as UTF-8."""
    esc = re.escape(encoding.escape)
    plain = {
        "E": encoding.escape,
        "F": encoding.field,
        "S": encoding.component,
        "T": encoding.subcomponent,
        "R": encoding.repetition,
        ".br": "\n",
        "H": "",
        "N": "",
    }

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in plain:
            return plain[code]
        if code.startswith("X") and len(code) % 2 == 1:
            try:
                return bytes.fromhex(code[1:]).decode("utf-8", errors="replace")
            except ValueError:
                return match.group(0)
        return match.group(0)  # an unknown sequence is kept as it came

    return re.sub(rf"{esc}(E|F|S|T|R|H|N|\.br|X[0-9A-Fa-f]*){esc}", replace, text)
