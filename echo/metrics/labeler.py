"""A rule-based finding labeler for chest radiograph reports, in the manner of NegEx and CheXpert.

Per sentence: find the mentions of each finding class (`finding_terms.TERMS`) and the cue phrases
(`cues.CUES`); a negation or uncertainty cue reaches the first mention a few words after it
(or, for "has resolved", before it) and then along a list of findings ("no consolidation, effusion,
or pneumothorax"), up to a boundary ("but", "there is", the end of the sentence). A class mentioned
several times takes its strongest label: positive over uncertain over negative, so "lungs are
otherwise clear" does not undo a nodule named in the sentence before.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from echo.findings import Label
from echo.metrics.cues import (
    CUES,
    LIST_CONNECTORS,
    LIST_NEUTRAL,
    LIST_QUALIFIERS,
    POST_WINDOW_WORDS,
    PRE_WINDOW_WORDS,
    SCOPE_BREAKERS,
)
from echo.metrics.finding_terms import TERMS
from echo.metrics.phrases import Cue, CueRole, Term, TermKind

# A sentence ends at a full stop that is not a decimal point, at ; ! ? or a blank line, and where a
# section header starts. A single line break does not end one: free-text reports wrap their lines.
_SENTENCE_END = re.compile(r"(?<!\d)\.(?!\d)|[;!?]|\n\s*\n|\b(?:findings|impression)\s*:")
_GAP_TOKEN = re.compile(r"[a-z0-9/'-]+|,")
_COPULAS = frozenset(
    {"is", "are", "was", "were", "be", "been", "has", "have", "appears", "appear", "remains", "remain"}
)
_POST_BREAKERS = SCOPE_BREAKERS - _COPULAS
_OR = frozenset({"or", "nor", "and/or"})
_LIST_WORDS = frozenset({"and", "or", "nor", "and/or"})
_STRENGTH = {Label.NEGATIVE: 0, Label.UNCERTAIN: 1, Label.POSITIVE: 2}

_NEGATING = {CueRole.PRE_NEGATION, CueRole.BOTH_NEGATION}
_HEDGING = {CueRole.PRE_UNCERTAINTY, CueRole.BOTH_UNCERTAINTY}
_POST_NEGATING = {CueRole.POST_NEGATION, CueRole.BOTH_NEGATION}
_POST_HEDGING = {CueRole.POST_UNCERTAINTY, CueRole.BOTH_UNCERTAINTY}
_PRE_ONLY = {CueRole.PRE_NEGATION, CueRole.PRE_UNCERTAINTY}


@dataclass
class Mention:
    term: Term
    start: int  # the whole match, in the lower-cased report
    end: int
    anchor_start: int  # the part cues attach to
    anchor_end: int
    sentence: int
    before: Label | None = None  # what a cue in front of it says
    after: Label | None = None  # what a cue behind it says

    @property
    def label(self) -> Label | None:
        """The mention's label; None when it says nothing about its classes."""
        if self.term.kind is TermKind.FIXED:
            return self.term.fixed
        hedged = Label.UNCERTAIN in (self.before, self.after)
        negated = Label.NEGATIVE in (self.before, self.after)
        if self.term.kind is TermKind.GROUP:
            return Label.NEGATIVE if negated and not hedged else None
        return Label.UNCERTAIN if hedged else Label.NEGATIVE if negated else Label.POSITIVE


@dataclass
class CueMatch:
    cue: Cue
    start: int
    end: int
    sentence: int


@dataclass
class Analysis:
    """A report as the labeler sees it; `attributes` reads the same structure."""

    text: str  # lower-cased
    sentences: list[tuple[int, int]]
    mentions: list[Mention]
    cues: list[CueMatch] = field(default_factory=list)

    def labels(self) -> dict[str, Label]:
        labels: dict[str, Label] = {}
        for mention in self.mentions:
            label = mention.label
            if label is None:
                continue
            for finding in mention.term.classes:
                if finding not in labels or _STRENGTH[label] > _STRENGTH[labels[finding]]:
                    labels[finding] = label
        return labels


def label_report(text: str) -> dict[str, Label]:
    """The label of every finding class the report mentions; classes it does not mention are absent."""
    return analyse(text).labels()


def analyse(text: str) -> Analysis:
    lowered = text.lower()
    boundaries = [m.span() for m in _SENTENCE_END.finditer(lowered)]
    ends = [start for start, _ in boundaries]
    sentences = list(zip([0, *(end for _, end in boundaries)], [*ends, len(lowered)], strict=True))
    mentions = _find_mentions(lowered, ends)
    anchors = [(m.anchor_start, m.anchor_end) for m in mentions]
    cues = _find_cues(lowered, ends, anchors)
    for sentence in range(len(sentences)):
        events: list[Mention | CueMatch] = sorted(
            [m for m in mentions if m.sentence == sentence] + [c for c in cues if c.sentence == sentence],
            key=_event_start,
        )
        _apply_pre_cues(lowered, events)
        _apply_post_cues(lowered, events)
    return Analysis(lowered, sentences, mentions, cues)


def _event_start(event: Mention | CueMatch) -> int:
    return event.anchor_start if isinstance(event, Mention) else event.start


def _sentence_of(ends: list[int], start: int, end: int) -> int | None:
    """The sentence holding [start, end), or None when the span crosses a sentence end."""
    first = bisect.bisect_right(ends, start - 1)
    last = bisect.bisect_right(ends, end - 1)
    return first if first == last else None


def _longest_first(spans: Iterable[tuple[int, int, object]]) -> list[tuple[int, int, object]]:
    """Non-overlapping spans, longer ones winning, then earlier ones."""
    chosen: list[tuple[int, int, object]] = []
    for start, end, item in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):
        if all(end <= s or start >= e for s, e, _ in chosen):
            chosen.append((start, end, item))
    return sorted(chosen, key=lambda s: s[0])


def _find_mentions(text: str, ends: list[int]) -> list[Mention]:
    found: list[tuple[int, int, object]] = []
    for term in TERMS:
        if term.triggers and not any(trigger in text for trigger in term.triggers):
            continue
        for match in term.pattern.finditer(text):
            sentence = _sentence_of(ends, match.start(), match.end())
            if sentence is not None:
                found.append((match.start(), match.end(), (term, match, sentence)))
    mentions: list[Mention] = []
    for start, end, item in _longest_first(found):
        term, match, sentence = item  # type: ignore[misc]
        anchor = (match.start("m"), match.end("m")) if "m" in term.pattern.groupindex else (start, end)
        mentions.append(Mention(term, start, end, anchor[0], anchor[1], sentence))
    return mentions


def _find_cues(text: str, ends: list[int], anchors: list[tuple[int, int]]) -> list[CueMatch]:
    found: list[tuple[int, int, object]] = []
    for cue in CUES:
        if cue.triggers and not any(trigger in text for trigger in cue.triggers):
            continue
        for match in cue.pattern.finditer(text):
            start, end = match.span()
            if start == end or any(start < a_end and end > a_start for a_start, a_end in anchors):
                continue
            sentence = _sentence_of(ends, start, end)
            if sentence is not None:
                found.append((start, end, (cue, sentence)))
    cues: list[CueMatch] = []
    for start, end, item in _longest_first(found):
        cue, sentence = item  # type: ignore[misc]
        cues.append(CueMatch(cue, start, end, sentence))
    return cues


def _gap_tokens(gap: str) -> list[str]:
    return _GAP_TOKEN.findall(gap)


def _reaches_first(gap: str, window: int, breakers: frozenset[str]) -> bool:
    """Whether a cue reaches a mention across ``gap``: a few words, no verb or conjunction between."""
    tokens = _gap_tokens(gap)
    return sum(t != "," for t in tokens) <= window and not any(t in breakers for t in tokens)


def _continues_list(gap: str, needs_connector: bool) -> bool:
    """Whether ``gap`` joins two findings of one list ("effusion, or pneumothorax")."""
    tokens = _gap_tokens(gap)
    if needs_connector and not any(t in _LIST_WORDS for t in tokens):
        return False
    plain = LIST_CONNECTORS | LIST_NEUTRAL
    if all(t in plain for t in tokens):
        return True
    return any(t in _OR for t in tokens) and all(t in plain or t in LIST_QUALIFIERS for t in tokens)


def _cue_label(role: CueRole, negating: set[CueRole], hedging: set[CueRole]) -> Label | None:
    if role in negating:
        return Label.NEGATIVE
    if role in hedging:
        return Label.UNCERTAIN
    return None


def _apply_pre_cues(text: str, events: list[Mention | CueMatch]) -> None:
    active: Label | None = None
    reach_from = 0  # where the gap to the next mention starts
    first = True  # the next mention is the first after the cue
    chaining = False  # the previous mention can continue a list
    for event in events:
        if isinstance(event, CueMatch):
            role = event.cue.role
            label = _cue_label(role, _NEGATING, _HEDGING)
            if role in (CueRole.BOUNDARY, CueRole.PSEUDO):
                active = None
            elif label is not None:
                keeps_negation = (
                    event.cue.inherits_negation
                    and active is Label.NEGATIVE
                    and not first
                    and _reaches_first(text[reach_from : event.start], 2, SCOPE_BREAKERS)
                )
                active = Label.NEGATIVE if keeps_negation else label
                reach_from, first = event.end, True
            continue
        if active is None:
            continue
        gap = text[reach_from : event.anchor_start]
        if first:
            reaches = _reaches_first(gap, PRE_WINDOW_WORDS, SCOPE_BREAKERS)
        else:
            reaches = chaining and event.term.chains and _continues_list(gap, needs_connector=False)
        if not reaches or event.term.kind is TermKind.FIXED:
            active = None
            continue
        event.before = active
        reach_from, first, chaining = event.anchor_end, False, event.term.chains


def _apply_post_cues(text: str, events: list[Mention | CueMatch]) -> None:
    active: Label | None = None
    reach_to = 0
    first = True
    chaining = False
    connector_seen = False  # "A, B and C have resolved": the comma before B counts once "and" is seen
    for event in reversed(events):
        if isinstance(event, CueMatch):
            role = event.cue.role
            label = _cue_label(role, _POST_NEGATING, _POST_HEDGING)
            if role in (CueRole.BOUNDARY, CueRole.PSEUDO) or role in _PRE_ONLY:
                active = None
            elif label is not None:
                active, reach_to, first, connector_seen = label, event.start, True, False
            continue
        if active is None:
            continue
        gap = text[event.anchor_end : reach_to]
        if first:
            reaches = _reaches_first(gap, POST_WINDOW_WORDS, _POST_BREAKERS)
        else:
            reaches = chaining and event.term.chains and _continues_list(gap, not connector_seen)
        if not reaches or event.term.kind is TermKind.FIXED:
            active = None
            continue
        event.after = active
        connector_seen = connector_seen or any(t in _LIST_WORDS for t in _gap_tokens(gap))
        reach_to, first, chaining = event.anchor_start, False, event.term.chains
