"""Whether a study's instances agree on who the study is about (patient, issuer, accession)."""

from __future__ import annotations

from collections.abc import Iterable

# Who a study is about: its instances must agree on each of these (both present and different is a
# conflict; a missing value is not). Reasons name the attribute, never its values.
IDENTITY_ATTRIBUTES = ("PatientID", "IssuerOfPatientID", "AccessionNumber")
_CONFLICT_PREFIX = "instances disagree on "


def identity_conflict(existing: str | None, attributes: Iterable[str]) -> str | None:
    """`existing` (a studies.identity_conflict value) with `attributes` added, in a fixed order."""
    named = set(attributes)
    if existing:
        named.update(existing.removeprefix(_CONFLICT_PREFIX).split(", "))
    ordered = [name for name in IDENTITY_ATTRIBUTES if name in named]
    return _CONFLICT_PREFIX + ", ".join(ordered) if ordered else existing


def disagreeing(known: dict[str, str | None], seen: dict[str, str | None]) -> list[str]:
    """The identity attributes present in both and different, in IDENTITY_ATTRIBUTES order."""
    return [
        name
        for name in IDENTITY_ATTRIBUTES
        if known.get(name) is not None and seen.get(name) is not None and known[name] != seen[name]
    ]
