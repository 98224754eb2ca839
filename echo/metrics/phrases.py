"""The labeler's phrase types: a finding's term, a cue, and how their patterns are compiled.

Patterns are regular expressions over lower-cased text, written for reading: a space matches any
whitespace, and word edges are added around each pattern. A term's named group ``m`` (when present)
is its anchor, the word the cues attach to: in "heart size is not enlarged" the anchor is "enlarged",
so the "not" in front of it negates it. Terms without an ``m`` group anchor on the whole match.

The vocabulary itself lives in `echo.metrics.finding_terms` (how reports name each finding) and
`echo.metrics.cues` (the negation, uncertainty and boundary phrases around them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from echo.findings import Label


class TermKind(Enum):
    FINDING = "finding"  # labelled by the cues around it: positive unless negated or hedged
    GROUP = "group"  # "support devices", "acute cardiopulmonary process": counts only when negated
    FIXED = "fixed"  # carries its own label: "lungs are clear" is negative whatever surrounds it


class CueRole(Enum):
    PRE_NEGATION = "pre-negation"  # negates the mentions after it: "no", "without"
    POST_NEGATION = "post-negation"  # negates the mentions before it: "has resolved"
    BOTH_NEGATION = "both-negation"  # "resolved pneumothorax" and "pneumothorax resolved"
    PRE_UNCERTAINTY = "pre-uncertainty"  # "possible", "concerning for"
    POST_UNCERTAINTY = "post-uncertainty"  # "cannot be excluded"
    BOTH_UNCERTAINTY = "both-uncertainty"  # "versus": hedges either side
    PSEUDO = "pseudo"  # looks like a cue and is not: "no change in", "not only"
    BOUNDARY = "boundary"  # ends every cue's reach: "but", "however", "there is"


@dataclass(frozen=True)
class Term:
    pattern: re.Pattern[str]
    triggers: tuple[str, ...]  # every match holds one of these (if any): a report without them skips it
    classes: tuple[str, ...]  # empty: a non-class finding, kept so lists of findings chain through it
    kind: TermKind = TermKind.FINDING
    fixed: Label | None = None
    chains: bool = True  # nouns chain in lists ("no A, B, or C"); predicates ("is enlarged") do not


@dataclass(frozen=True)
class Cue:
    pattern: re.Pattern[str]
    triggers: tuple[str, ...]
    role: CueRole
    # "to suggest" after a negated noun keeps the negation ("no opacity to suggest pneumonia")
    inherits_negation: bool = False


def compile_phrase(pattern: str) -> re.Pattern[str]:
    body = pattern.strip().replace(" ", r"\s+")
    left_edge = "" if body.startswith(":") else "(?<![a-z0-9])"  # ": none" follows a word
    return re.compile(rf"{left_edge}(?:{body})(?![a-z0-9])")


def triggers(pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Literal strings one of which every match of ``pattern`` contains; () when none is known.

    Skipping the patterns whose triggers a report lacks makes labelling several times faster. The
    strings come from the pattern's parse tree (`re._parser`, the stdlib's own parser): in a
    sequence, the most selective required literal or group; in an alternation, one per branch.
    """
    try:
        from re import _constants, _parser  # private, hence the fallback: () means "always run"

        required = _required(_parser.parse(pattern.pattern), _constants)
    except (ImportError, AttributeError, TypeError, ValueError):
        return ()
    return tuple(sorted(required)) if required else ()


def _required(items: Any, c: Any) -> frozenset[str] | None:
    """Strings one of which every match of the parsed sequence ``items`` holds (c: re._constants)."""
    candidates: list[frozenset[str]] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            candidates.append(frozenset({"".join(run)}))
            run.clear()

    for op, argument in items:
        if op is c.LITERAL:
            run.append(chr(argument))
            continue
        close_run()
        found: frozenset[str] | None = None
        if op is c.SUBPATTERN:
            found = _required(argument[3], c)
        elif op is c.BRANCH:
            branches = [_required(branch, c) for branch in argument[1]]
            if all(branches):
                found = frozenset().union(*branches)  # type: ignore[arg-type]
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and argument[0] >= 1:
            found = _required(argument[2], c)
        if found:
            candidates.append(found)
    close_run()
    return max(candidates, key=lambda strings: min(map(len, strings)), default=None)
