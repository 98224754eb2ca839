"""DICOM value rules (PS3.5 6.2) as pure checks on one value: valid, repaired, or to be dropped.

A modality or a PACS sometimes sends a header value that its VR does not allow: a birth date
"1970-01-01" or "19xx0101", a sex "Male", a time "25:61", a description longer than 64 characters.
pydicom reads such values as they are, but the libraries that build the report (highdicom, the
HL7 encoder) refuse them, and one refused optional value must not lose a report. `check_value`
says what to do with one value; the sanitizer (`exporters.sanitize`) decides per attribute.

Reasons never quote the value: header values are identifiers and the reasons end up in logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time

# Maximum length in characters (PS3.5 table 6.2-1); UC, UT and UR have no practical maximum.
MAX_LENGTH = {
    "AE": 16,
    "AS": 4,
    "CS": 16,
    "DA": 8,
    "DS": 16,
    "DT": 26,
    "IS": 12,
    "LO": 64,
    "LT": 10240,
    "PN": 64,  # per component group
    "SH": 16,
    "ST": 1024,
    "TM": 14,
}
TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
CHECKED_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM"}) | TEXT_VRS
_MULTILINE_VRS = frozenset({"LT", "ST", "UT"})  # these may hold CR, LF, FF and TAB

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DA_SEPARATED = re.compile(r"^(\d{4})[-./](\d{2})[-./](\d{2})$")
_TM = re.compile(r"^(\d{2})(?:(\d{2})(?:(\d{2})(\.\d{1,6})?)?)?$")
_TM_COLONS = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?$")
_DT = re.compile(
    r"^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$"
)
_AS = re.compile(r"^\d{3}[DWMY]$")
_CS = re.compile(r"^[A-Z0-9 _]*$")
_DS = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_IS = re.compile(r"^[+-]?\d+$")
_CONTROL = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")  # ESC (0x1B) introduces ISO 2022 escapes
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")  # keeps TAB LF FF CR


@dataclass(frozen=True)
class Fix:
    """An invalid value: `problem` says what is wrong with it; `value` is the repair and `action` says
    what the repair did, or both are None when nothing valid can be made of it (drop it)."""

    value: str | None
    problem: str
    action: str | None = None

    def note(self, name: str) -> str:
        """One line for the delivery's note: the attribute, what was done, and why."""
        return f"{name}: {self.problem}; {self.action or 'dropped'}"


def parse_date(text: str) -> date | None:
    """A DICOM DA (YYYYMMDD) as a date; None when it is not one."""
    match = _DA.match(text.strip())
    return _date(*match.groups()) if match else None


def parse_time(text: str) -> time | None:
    """A DICOM TM (HH, HHMM, HHMMSS or HHMMSS.FFFFFF) as a time; None when it is not one."""
    match = _TM.match(text.strip())
    return _time(*match.groups()) if match else None


def parse_datetime(text: str) -> datetime | None:
    """A DICOM DT as a naive datetime (any UTC offset dropped); None when it is not one."""
    match = _DT.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, _offset = match.groups()
    day_part = _date(year, month or "01", day or "01")
    time_part = _time(hour or "00", minute, second, fraction)
    if day_part is None or time_part is None:
        return None
    return datetime.combine(day_part, time_part)


def read_date(text: str) -> date | None:
    """Like `parse_date`, also accepting what `check_value` repairs (YYYY-MM-DD, YYYY.MM.DD)."""
    fix = _check_da("DA", text)
    return parse_date(text if fix is None else fix.value or "")


def read_time(text: str) -> time | None:
    """Like `parse_time`, also accepting what `check_value` repairs (HH:MM:SS)."""
    fix = _check_tm("TM", text)
    return parse_time(text if fix is None else fix.value or "")


def read_datetime(text: str) -> datetime | None:
    """Like `parse_datetime`, also accepting what `check_value` repairs (ISO 8601)."""
    fix = _check_dt("DT", text)
    repaired = text if fix is None else fix.value or ""
    return parse_datetime(repaired)


def check_value(vr: str, text: str) -> Fix | None:
    """None when `text` is a valid single value of `vr`; otherwise the repair, or a drop."""
    checker = _CHECKERS.get(vr)
    return checker(vr, text) if checker is not None else None


def truncate(text: str, limit: int) -> str:
    """The first `limit` characters without trailing spaces (DICOM pads with spaces anyway)."""
    return text[:limit].rstrip()


# --- one checker per VR -------------------------------------------------------------------------


def _check_da(vr: str, text: str) -> Fix | None:
    stripped = text.strip()
    if not stripped or parse_date(stripped):
        return None
    match = _DA_SEPARATED.match(stripped)
    if match and _date(*match.groups()):
        return Fix("".join(match.groups()), "a date written with separators", "rewritten as YYYYMMDD")
    return Fix(None, "not a valid date (DA, YYYYMMDD)")


def _check_tm(vr: str, text: str) -> Fix | None:
    stripped = text.strip()
    if not stripped or parse_time(stripped):
        return None
    match = _TM_COLONS.match(stripped)
    if match:
        hour, minute, second, fraction = match.groups()
        repaired = f"{int(hour):02d}{minute}{second or ''}{fraction or ''}"
        if parse_time(repaired):
            return Fix(repaired, "a time written with colons", "rewritten as HHMMSS")
    return Fix(None, "not a valid time (TM, HHMMSS)")


def _check_dt(vr: str, text: str) -> Fix | None:
    stripped = text.strip()
    if not stripped or parse_datetime(stripped):
        return None
    try:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        return Fix(None, "not a valid date and time (DT, YYYYMMDDHHMMSS)")
    offset = moment.strftime("%z")
    fraction = f".{moment.microsecond:06d}" if moment.microsecond else ""
    return Fix(
        f"{moment:%Y%m%d%H%M%S}{fraction}{offset}",
        "an ISO 8601 date and time",
        "rewritten as YYYYMMDDHHMMSS",
    )


def _check_as(vr: str, text: str) -> Fix | None:
    stripped = text.strip()
    if not stripped or _AS.match(stripped):
        return None
    return Fix(None, "not a valid age (AS, nnnD/W/M/Y)")


def _check_cs(vr: str, text: str) -> Fix | None:
    stripped = text.strip()
    if _CS.match(stripped) and len(stripped) <= MAX_LENGTH["CS"]:
        return None
    upper = stripped.upper()
    if _CS.match(upper) and len(upper) <= MAX_LENGTH["CS"]:
        return Fix(upper, "a code in lower case", "rewritten in upper case")
    return Fix(None, "not a valid code string (CS: up to 16 of A-Z 0-9 space _)")


def _check_ds(vr: str, text: str) -> Fix | None:
    stripped = text.strip()
    if not stripped or (_DS.match(stripped) and len(stripped) <= MAX_LENGTH["DS"]):
        return None
    return Fix(None, "not a valid decimal string (DS)")


def _check_is(vr: str, text: str) -> Fix | None:
    stripped = text.strip()
    if not stripped or (
        _IS.match(stripped) and len(stripped) <= MAX_LENGTH["IS"] and -(2**31) <= int(stripped) < 2**31
    ):
        return None
    return Fix(None, "not a valid integer string (IS)")


def _check_ae(vr: str, text: str) -> Fix | None:
    if len(text) <= MAX_LENGTH["AE"] and not _CONTROL.search(text) and "\\" not in text:
        return None
    return Fix(None, "not a valid AE title (AE: up to 16 characters)")


def _check_text(vr: str, text: str) -> Fix | None:
    """LO SH ST LT UC UT: forbidden control characters become spaces, then the length is cut."""
    repairs = _Repairs()
    control = _CONTROL_MULTILINE if vr in _MULTILINE_VRS else _CONTROL
    if control.search(text):
        text = control.sub(" ", text)
        repairs.add("control characters", "replaced with spaces")
    limit = MAX_LENGTH.get(vr)
    if limit is not None and len(text) > limit:
        text = truncate(text, limit)
        repairs.add(f"longer than the {limit} characters {vr} allows", f"truncated to {limit} characters")
    return repairs.fix(text)


def _check_pn(vr: str, text: str) -> Fix | None:
    """PN: at most 3 component groups of at most 5 components and 64 characters each."""
    repairs = _Repairs()
    if _CONTROL.search(text):
        text = _CONTROL.sub(" ", text)
        repairs.add("control characters", "replaced with spaces")
    groups = text.split("=")
    if len(groups) > 3:
        groups = groups[:3]
        repairs.add("more than 3 component groups", "the extra groups left out")
    limit = MAX_LENGTH["PN"]
    for index, group in enumerate(groups):
        components = group.split("^")
        if len(components) > 5:
            components = [*components[:4], " ".join(part for part in components[4:] if part)]
            repairs.add("more than 5 name components", "the extra components joined to the fifth")
        if len("^".join(components)) > limit:
            components = _shorten_longest(components, limit)
            repairs.add(
                f"longer than the {limit} characters PN allows",
                f"longest components shortened to {limit} characters",
            )
        groups[index] = "^".join(components).rstrip("^")
    return repairs.fix("=".join(groups).rstrip("="))


def _shorten_longest(components: list[str], limit: int) -> list[str]:
    """Cut the longest component until the joined name fits, so a very long family name does not
    push the given name out."""
    components = list(components)
    while len("^".join(components)) > limit:
        excess = len("^".join(components)) - limit
        longest = max(range(len(components)), key=lambda index: len(components[index]))
        components[longest] = components[longest][: max(0, len(components[longest]) - excess)].rstrip()
    return components


class _Repairs:
    """Problems found and repairs made on one value, each said once."""

    def __init__(self) -> None:
        self.problems: dict[str, None] = {}
        self.actions: dict[str, None] = {}

    def add(self, problem: str, action: str) -> None:
        self.problems[problem] = None
        self.actions[action] = None

    def fix(self, value: str) -> Fix | None:
        if not self.problems:
            return None
        return Fix(value, "; ".join(self.problems), ", ".join(self.actions))


_CHECKERS = {
    "AE": _check_ae,
    "AS": _check_as,
    "CS": _check_cs,
    "DA": _check_da,
    "DS": _check_ds,
    "DT": _check_dt,
    "IS": _check_is,
    "LO": _check_text,
    "LT": _check_text,
    "PN": _check_pn,
    "SH": _check_text,
    "ST": _check_text,
    "TM": _check_tm,
    "UC": _check_text,
    "UT": _check_text,
}


def _date(year: str, month: str, day: str) -> date | None:
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        return None


def _time(hour: str, minute: str | None, second: str | None, fraction: str | None) -> time | None:
    hours, minutes, seconds = int(hour), int(minute or 0), int(second or 0)
    if hours > 23 or minutes > 59 or seconds > 60:  # 60: a leap second, which DICOM allows
        return None
    micro = int((fraction or ".0")[1:].ljust(6, "0"))
    return time(hours, minutes, min(seconds, 59), micro)
