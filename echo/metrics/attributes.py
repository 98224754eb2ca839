"""Side and lobe of the positive findings, read from the words next to each positive mention.

A mention's window runs from the previous mention (or boundary, or sentence start) to the next one,
so in "right lower lobe consolidation and a small left effusion" the consolidation gets the lobe and
the effusion gets "left". The nearest side or lobe word wins; an effusion is bilateral when a window
says so ("bilateral", "both"), when a plural mention has both sides ("right greater than left
effusions") or no side at all ("pleural effusions"), or when the report names each side separately.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from echo.findings import ATTRIBUTES, Label
from echo.metrics.labeler import Analysis, CueMatch, Mention, analyse
from echo.metrics.phrases import CueRole

_SIDE_WORD = re.compile(r"(?<![a-z])(bilateral(?:ly)?|both|bibasilar|bibasal|left|right)(?:-sided)?(?![a-z])")
_LOBE_WORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"(?<![a-z])(?:{pattern})(?![a-z])"), lobe)
    for pattern, lobe in (
        (r"right upper lobe|rul|right (?:lung )?ap(?:ex|ical)", "right upper lobe"),
        (r"right middle lobe|rml|right mid(?:dle)? lung(?: zone)?", "right middle lobe"),
        (r"right lower lobe|rll|right (?:lung )?bas(?:e|al|ilar)|right infrahilar", "right lower lobe"),
        (
            r"left upper lobe|lul|lingula(?:r)?(?: segment)?|left (?:lung )?ap(?:ex|ical)|left mid(?:dle)? lung(?: zone)?",
            "left upper lobe",
        ),
        (
            r"left lower lobe|lll|left (?:lung )?bas(?:e|al|ilar)|retrocardiac|left infrahilar",
            "left lower lobe",
        ),
    )
)
_PLURAL = re.compile(r"effusions|angles|sulci")
_POST_WINDOW_WORDS = 8
_BILATERAL = {"bilateral", "bilaterally", "both", "bibasilar", "bibasal"}


def label_attributes(text: str) -> dict[str, dict[str, str]]:
    """Side or lobe of each positive finding that has one (keys as in `echo.findings.ATTRIBUTES`)."""
    return attributes_of(analyse(text))


def attributes_of(analysis: Analysis) -> dict[str, dict[str, str]]:
    labels = analysis.labels()
    result: dict[str, dict[str, str]] = {}
    for finding, allowed in ATTRIBUTES.items():
        if labels.get(finding) is not Label.POSITIVE:
            continue
        positives = [m for m in analysis.mentions if finding in m.term.classes and m.label is Label.POSITIVE]
        (attribute, values), *_ = allowed.items()
        if attribute == "lobe":
            value = _first(_lobe(analysis, m) for m in positives)
        elif finding == "pleural_effusion":
            value = _effusion_side([_effusion_side_of(analysis, m) for m in positives])
        else:
            value = _first(_side(analysis, m) for m in positives)
        if value in values:
            result[finding] = {attribute: value}
    return result


def _first(values: Iterable[str | None]) -> str | None:
    return next((v for v in values if v is not None), None)


def _window(analysis: Analysis, mention: Mention) -> tuple[int, int]:
    """Where the words describing ``mention`` can be: between its neighbouring mentions."""
    sentence_start, sentence_end = analysis.sentences[mention.sentence]
    start, end = sentence_start, sentence_end
    neighbours: list[Mention | CueMatch] = [
        m for m in analysis.mentions if m.sentence == mention.sentence and m is not mention
    ]
    neighbours += [
        c for c in analysis.cues if c.sentence == mention.sentence and c.cue.role is CueRole.BOUNDARY
    ]
    for other in neighbours:
        if other.end <= mention.start:
            start = max(start, other.end)
        elif other.start >= mention.end:
            end = min(end, other.start)
    words = list(re.finditer(r"\S+", analysis.text[mention.end : end]))
    if len(words) > _POST_WINDOW_WORDS:
        end = mention.end + words[_POST_WINDOW_WORDS - 1].end()
    return start, end


def _nearest(
    analysis: Analysis, mention: Mention, hits: Iterable[tuple[int, int, str]]
) -> list[tuple[int, str]]:
    """(distance to the mention, value) of each hit, nearest first; a hit inside the mention is 0."""
    ranked = []
    for start, end, value in hits:
        if end <= mention.start:
            distance = mention.start - end
        elif start >= mention.end:
            distance = start - mention.end
        else:
            distance = 0
        ranked.append((distance, value))
    return sorted(ranked)


def _side_hits(analysis: Analysis, mention: Mention) -> list[tuple[int, str]]:
    start, end = _window(analysis, mention)
    hits = [
        (m.start() + start, m.end() + start, m.group(1))
        for m in _SIDE_WORD.finditer(analysis.text[start:end])
    ]
    return _nearest(analysis, mention, hits)


def _side(analysis: Analysis, mention: Mention) -> str | None:
    return _first(value for _, value in _side_hits(analysis, mention) if value in ("left", "right"))


def _effusion_side_of(analysis: Analysis, mention: Mention) -> str | None:
    sides = [value for _, value in _side_hits(analysis, mention)]
    plural = _PLURAL.search(analysis.text[mention.start : mention.end]) is not None
    if any(s in _BILATERAL for s in sides) or (plural and {"left", "right"} <= set(sides)):
        return "bilateral"
    if plural and not sides:
        return "bilateral"
    return sides[0] if sides else None


def _effusion_side(sides: list[str | None]) -> str | None:
    found = {s for s in sides if s is not None}
    if "bilateral" in found or {"left", "right"} <= found:
        return "bilateral"
    return _first(sides)


def _lobe(analysis: Analysis, mention: Mention) -> str | None:
    start, end = _window(analysis, mention)
    window = analysis.text[start:end]
    hits = [
        (m.start() + start, m.end() + start, lobe)
        for pattern, lobe in _LOBE_WORDS
        for m in pattern.finditer(window)
    ]
    return _first(value for _, value in _nearest(analysis, mention, hits))
