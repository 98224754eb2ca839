"""The labeler's vocabulary: how chest radiograph reports name each finding, and the cue phrases.

Patterns are regular expressions over lower-cased text, written for reading: a space matches any
whitespace, and word edges are added around each pattern. A term's named group ``m`` (when present)
is its anchor, the word the cues attach to: in "heart size is not enlarged" the anchor is "enlarged",
so the "not" in front of it negates it. Terms without an ``m`` group anchor on the whole match.

The lists are modelled on the CheXpert labeler's mention, negation and uncertainty phrases (Irvin
et al. 2019) and on NegEx's triggers, pseudo-triggers and terminations (Chapman et al. 2001), kept
to what a chest radiograph report says about these nine classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from echo.findings import FINDINGS, SUPPORT_DEVICES, Label

DEVICES: tuple[str, ...] = SUPPORT_DEVICES
NON_DEVICE: tuple[str, ...] = tuple(f for f in FINDINGS if f not in DEVICES)
PARENCHYMA: tuple[str, ...] = ("consolidation", "edema", "nodule")


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


def _terms(
    classes: tuple[str, ...],
    patterns: tuple[str, ...],
    kind: TermKind = TermKind.FINDING,
    fixed: Label | None = None,
    chains: bool = True,
) -> list[Term]:
    compiled = [compile_phrase(p) for p in patterns]
    return [Term(c, triggers(c), classes, kind, fixed, chains) for c in compiled]


_FILLER = r"(?:(?!and\b|but\b|or\b|with\b|without\b)[a-z-]+ ){0,3}?"
_BE = r"(?:is|are|appears?|remains?|seems?|looks?|is again|are again|has become|measures?)"

_CARDIAC_SUBJECT = (
    r"(?:the )?(?:heart(?: size)?|cardiac (?:size|silhouette|contours?|shadow|dimensions)|"
    r"cardiomediastinal (?:silhouette|contours?)|cardiothoracic ratio|size of the heart)"
)
_NORMAL_CARDIAC_SUBJECT = (
    r"(?:the )?(?:heart(?: size)?|cardiac (?:size|silhouette|contours?|shadow)|"
    r"cardiomediastinal (?:silhouette|contours?)|cardiomediastinal and hilar (?:contours|silhouettes?)|"
    r"heart and mediastinum|cardiac and mediastinal (?:contours|silhouettes?)|"
    r"mediastinal and cardiac (?:contours|silhouettes?)|"
    r"heart size and (?:the )?(?:mediastinal|cardiomediastinal) (?:contours?|silhouettes?)|"
    r"heart size,? mediastinal contours,? and hila|size of the heart)"
)
_NORMAL_FILLER = r"(?:(?!enlarged\b|large\b|increased\b|and\b|but\b|not\b)[a-z-]+ ){0,4}?"

CARDIOMEGALY = _terms(
    ("cardiomegaly",),
    (
        r"cardiomegaly",
        r"cardiac enlargement",
        r"enlarged (?:heart|cardiac silhouette|cardiomediastinal silhouette|cardiac contours?)",
        r"enlargement of the (?:heart|cardiac silhouette|cardiomediastinal silhouette)",
        r"(?:cardiac|heart) silhouette enlargement",
        r"increased cardiothoracic ratio",
        r"increased (?:heart|cardiac) size",
    ),
) + _terms(
    ("cardiomegaly",),
    (rf"{_CARDIAC_SUBJECT} {_BE} {_FILLER}(?P<m>enlarged|large|increased)",),
    chains=False,
)

CARDIOMEGALY_FIXED = _terms(
    ("cardiomegaly",),
    (
        rf"{_NORMAL_CARDIAC_SUBJECT} {_BE} {_NORMAL_FILLER}(?:normal|within normal limits|unremarkable)",
        rf"{_NORMAL_CARDIAC_SUBJECT} {_BE} normal in size",
        r"(?:heart|cardiac silhouette) (?:size )?normal in size",
        r"heart size (?:is )?normal",
        r"normal(?:-sized| sized)? (?:heart(?: size)?|cardiac (?:size|silhouette|contours?)|"
        r"cardiomediastinal (?:silhouette|contours?)|size of the heart)",
    ),
    kind=TermKind.FIXED,
    fixed=Label.NEGATIVE,
    chains=False,
) + _terms(
    ("cardiomegaly",),
    (
        rf"{_CARDIAC_SUBJECT} {_BE} (?:at the )?(?:borderline|upper limits? of normal)(?: enlarged| in size)?",
        r"borderline (?:enlarged )?(?:heart size|cardiomegaly|cardiac enlargement|enlarged heart)",
    ),
    kind=TermKind.FIXED,
    fixed=Label.UNCERTAIN,
    chains=False,
)

PLEURAL_EFFUSION = _terms(
    ("pleural_effusion",),
    (
        r"(?:pleural )?effusions?",
        r"pleural fluid",
        r"(?:layering |loculated )?fluid in the (?:(?:left|right) )?pleural spaces?",
        r"hydrothorax",
        r"blunting of the (?:(?:left|right|bilateral) )?(?:costophrenic|cp) (?:angles?|sulcus|sulci)",
        r"(?:left |right |bilateral )?(?:costophrenic|cp) (?:angle |sulcus )?blunting",
        r"blunted (?:(?:left|right|bilateral) )?(?:costophrenic|cp) (?:angles?|sulcus|sulci)",
        r"meniscus(?: sign)?",
    ),
) + _terms(
    ("pleural_effusion",),
    (
        r"(?:(?:left|right) )?(?:costophrenic|cp) (?:angles?|sulcus|sulci) (?:is|are|appears?|remains?) (?:\w+ )?(?P<m>blunted)",
    ),
    chains=False,
)

PLEURAL_FIXED = _terms(
    ("pleural_effusion",),
    (
        r"(?:the )?(?:costophrenic|cp) (?:angles?|sulci) (?:are|is|appears?|remains?) (?:\w+ )?(?:sharp|clear|preserved|normal|sharply defined)",
        r"sharp (?:costophrenic|cp) (?:angles?|sulci)",
    ),
    kind=TermKind.FIXED,
    fixed=Label.NEGATIVE,
    chains=False,
) + _terms(
    ("pleural_effusion", "pneumothorax"),
    (
        r"(?:the )?pleural (?:spaces?|surfaces?) (?:are|is|appears?|remains?) (?:\w+ )?(?:clear|normal|unremarkable)",
    ),
    kind=TermKind.FIXED,
    fixed=Label.NEGATIVE,
    chains=False,
)

PNEUMOTHORAX = _terms(
    ("pneumothorax",),
    (
        r"pneumothora(?:x|ces)",
        r"ptx",
        r"(?:visceral |apical )?pleural (?:line|edge)(?: (?:is )?(?:seen|visible|identified))?"
        r"(?: [a-z]+){0,6}? (?:without|with no|with absent|and no|and absent|beyond which there (?:is|are) no) "
        r"(?:peripheral |distal )?(?:lung|vascular|pulmonary) markings(?: (?:beyond|lateral to|peripheral to) it)?",
        r"(?:visceral|apical) pleural (?:line|edge)",
        r"(?:absence|absent|lack|loss) of (?:peripheral |distal )?(?:lung|vascular|pulmonary) markings",
        r"(?:without|no|absent) (?:peripheral |distal )?(?:lung|vascular|pulmonary) markings (?:beyond|lateral to|peripheral to) (?:it|the (?:visceral )?pleural line)",
        r"collapsed (?:left |right )?lung",
    ),
) + _terms(("pneumothorax", "pleural_effusion"), (r"hydropneumothora(?:x|ces)",))

CONSOLIDATION = _terms(
    ("consolidation",),
    (
        r"consolidations?",
        r"consolidative (?:opacit(?:y|ies)|process|changes?|density)",
        r"(?:air-?space|alveolar) (?:opacit(?:y|ies)|opacification|disease|process|consolidation|densit(?:y|ies))",
        r"(?:focal|lobar|segmental|patchy|confluent|parenchymal|retrocardiac|dense) (?:opacit(?:y|ies)|opacification|densit(?:y|ies))",
        r"opacit(?:y|ies)|opacification",
        r"pneumonias?",
        r"infiltrates?",
        r"bronchopneumonia",
    ),
)

NODULE = _terms(
    ("nodule",),
    (
        r"(?:pulmonary |lung )?nodules?",
        r"nodular (?:opacit(?:y|ies)|densit(?:y|ies)|lesions?)",
        r"(?:pulmonary |lung )?mass(?:es)?",
        r"mass lesions?",
        r"(?:round|rounded|spherical) (?:opacit(?:y|ies)|densit(?:y|ies)|lesions?)",
        r"coin lesions?",
        r"(?:pulmonary|lung) lesions?",
    ),
)

EDEMA = _terms(
    ("edema",),
    (
        r"(?:pulmonary |interstitial |alveolar |perihilar )?o?edema",
        r"(?:pulmonary )?(?:vascular|venous) (?:congestion|engorgement|redistribution)",
        r"(?:pulmonary|vascular) congestion",
        r"cephalization(?: of (?:the )?(?:pulmonary )?vessels| of (?:the )?(?:pulmonary )?vasculature)?",
        r"kerley(?: b)? lines",
        r"(?:interlobular )?septal (?:lines|thickening)",
        r"interstitial (?:markings|opacit(?:y|ies)|prominence|thickening)",
        r"prominent interstitial markings",
        r"(?:bilateral )?perihilar (?:haziness|hazy opacit(?:y|ies)|opacit(?:y|ies)|opacification)",
        r"hazy (?:bilateral )?(?:perihilar )?opacit(?:y|ies)",
        r"fluid overload",
        r"(?:congestive )?(?:heart|cardiac) failure",
        r"chf",
        r"peribronchial cuffing",
    ),
)

EDEMA_FIXED = _terms(
    ("edema",),
    (
        r"(?:the )?pulmonary (?:vascularity|vasculature) (?:is|are|appears?|remains?) (?:\w+ )?(?:normal|within normal limits|unremarkable)",
        r"normal pulmonary (?:vascularity|vasculature)",
    ),
    kind=TermKind.FIXED,
    fixed=Label.NEGATIVE,
    chains=False,
)

ENDOTRACHEAL_TUBE = _terms(
    ("endotracheal_tube",),
    (
        r"endotracheal(?: tube)?",
        r"et(?:-| )tube",
        r"ett",
        r"intubated|intubation",
    ),
) + _terms(("endotracheal_tube",), (r"extubated|extubation",), kind=TermKind.FIXED, fixed=Label.NEGATIVE)

CENTRAL_LINE = _terms(
    ("central_line",),
    (
        r"central (?:venous )?(?:line|catheter|access)s?",
        r"cvcs?|cvls?",
        r"piccs?(?: lines?| catheters?)?",
        r"peripherally inserted central (?:venous )?catheters?",
        r"(?:internal jugular|ij|subclavian|femoral)(?: approach| venous| central venous| central| dialysis| introducer)*"
        r" (?:lines?|catheters?|sheaths?|cvcs?)",
        r"port-?a-?caths?|portacaths?|mediports?|power\s*ports?|chest (?:wall )?ports?|port catheters?",
        r"(?:hemo)?dialysis catheters?",
        r"swan-?ganz(?: catheter)?|pulmonary artery catheters?",
        r"venous catheters?",
    ),
)

PACEMAKER = _terms(
    ("pacemaker",),
    (
        r"(?:dual-chamber |single-chamber |dual chamber |single chamber |biventricular |cardiac )?"
        r"(?:pacemakers?|pacers?)(?: (?:leads?|wires?|generator|device|battery))?",
        r"pacing (?:leads?|wires?|device)",
        r"(?:cardiac|implantable cardiac) (?:device|pacing device|rhythm device|conduction device|defibrillator)s?",
        r"a?icds?|(?:implantable cardioverter-? )?defibrillators?",
        r"transvenous (?:pacing )?leads?",
        r"(?:left |right )?(?:chest wall|subcutaneous) (?:cardiac )?(?:device|generator)s?",
        r"(?:cardiac )?resynchronization (?:therapy )?device",
    ),
)

GROUPS = (
    _terms(
        DEVICES,
        (
            r"(?:support|medical|monitoring|indwelling|life support) devices?",
            r"devices?",
            r"(?:indwelling |support )?(?:lines?,? (?:and|or|/) tubes?|tubes?,? (?:and|or|/) lines?|lines/tubes|tubes/lines)",
            r"(?:lines|tubes|catheters)",
        ),
        kind=TermKind.GROUP,
    )
    + _terms(
        NON_DEVICE,
        (
            r"acute (?:cardiopulmonary|intrathoracic|cardiothoracic|chest|pulmonary|lung|cardiac or pulmonary)"
            r" (?:process|abnormality|abnormalities|disease|findings?|pathology|changes?|condition)",
            r"acute (?:radiographic |radiologic )?(?:process|abnormality|abnormalities|findings?)",
            r"active (?:cardiopulmonary )?disease",
        ),
        kind=TermKind.GROUP,
    )
    + _terms(
        ("pleural_effusion", "pneumothorax"),
        (r"pleural (?:abnormality|abnormalities|disease|process)",),
        kind=TermKind.GROUP,
    )
    + _terms(
        ("consolidation", "nodule"),
        (r"focal (?:lung |pulmonary |parenchymal )?(?:abnormality|abnormalities|lesions?)",),
        kind=TermKind.GROUP,
    )
)

NORMALS = (
    _terms(
        PARENCHYMA,
        (
            r"(?:the )?(?:lungs?|lung fields?|lung parenchyma|lung zones?|both lungs)"
            r" (?:are|is|remains?|appears?) (?:(?!not\b|of\b)[a-z-]+ ){0,3}?(?:clear|unremarkable|normal)(?! of)",
            r"(?:otherwise )?clear lungs",
            r"lungs:? clear(?! of)",
        ),
        kind=TermKind.FIXED,
        fixed=Label.NEGATIVE,
        chains=False,
    )
    + _terms(
        NON_DEVICE,
        (r"normal (?:chest )?(?:radiograph|x-ray|radiographs|study|examination|exam)",),
        kind=TermKind.FIXED,
        fixed=Label.NEGATIVE,
        chains=False,
    )
    + _terms(
        DEVICES,
        (
            r"(?:support devices|devices|lines(?: and|/| or) tubes|tubes(?: and|/| or) lines|lines|tubes)"
            r"\s*:\s*(?:none|absent|not present)",
        ),
        kind=TermKind.FIXED,
        fixed=Label.NEGATIVE,
        chains=False,
    )
)

# Findings outside the nine classes: matched so that "no fracture or effusion" chains through them,
# and so that "pericardial effusion" or "acute osseous abnormality" do not count as a class.
OTHER = _terms(
    (),
    (
        r"pericardial effusions?",
        r"mass effect",
        r"acute (?:osseous|bony|skeletal) (?:abnormality|abnormalities|findings?|process)",
        r"(?:osseous|bony|skeletal) (?:abnormality|abnormalities|lesions?|findings?)",
        r"(?:acute |displaced )?(?:rib )?fractures?",
        r"(?:subsegmental |linear |plate-like |plate like |bibasilar |basilar )?atelectasis",
        r"(?:linear|streaky|reticular) (?:opacit(?:y|ies)|densit(?:y|ies))",
        r"subcutaneous emphysema|emphysema|pneumomediastinum|pneumoperitoneum",
        r"free (?:intraperitoneal |subdiaphragmatic )?air",
        r"(?:hilar |mediastinal )?(?:lymph)?adenopathy",
        r"mediastinal widening|widening of the mediastinum|widened mediastinum",
        r"hiatal hernia|scarring|granulomas?|calcified granulomas?",
        r"(?:nasogastric|orogastric|enteric|feeding|ng|og|dobhoff|chest) tubes?",
        r"tracheostomy(?: tube)?|sternotomy wires|surgical clips",
    ),
)

TERMS: tuple[Term, ...] = tuple(
    CARDIOMEGALY
    + CARDIOMEGALY_FIXED
    + PLEURAL_EFFUSION
    + PLEURAL_FIXED
    + PNEUMOTHORAX
    + CONSOLIDATION
    + NODULE
    + EDEMA
    + EDEMA_FIXED
    + ENDOTRACHEAL_TUBE
    + CENTRAL_LINE
    + PACEMAKER
    + GROUPS
    + NORMALS
    + OTHER
)


def _cues(role: CueRole, patterns: tuple[str, ...], inherits_negation: bool = False) -> list[Cue]:
    compiled = [compile_phrase(p) for p in patterns]
    return [Cue(c, triggers(c), role, inherits_negation) for c in compiled]


_SEEN = (
    r"(?:seen|identified|present|visualized|visualised|appreciated|demonstrated|evident|visible|detected|"
    r"apparent|noted|observed|shown)"
)

CUES: tuple[Cue, ...] = tuple(
    _cues(
        CueRole.PRE_NEGATION,
        (
            r"no|not|without|nor|neither|never",
            r"negative for|free of|clear of|absence of|rather than",
            r"no (?:radiographic |radiologic |definite |convincing |other |further )?(?:evidence|signs?|findings?) (?:of|for|to suggest)",
            r"without (?:radiographic |definite )?(?:evidence|signs?) of",
            r"no longer|no residual|no definite|no new",
            r"(?:interval |complete |near-complete |near complete )?(?:resolution|removal) of",
            r"(?:status post|s/p) removal of",
        ),
    )
    + _cues(CueRole.BOTH_NEGATION, (r"resolved|removed|absent",))
    + _cues(
        CueRole.POST_NEGATION,
        (
            r"(?:(?:has|have) )?(?:(?:since|now|completely|interval) )?(?:resolved|cleared|been removed|been resolved)",
            r"(?:is|are|was|were) (?:now )?(?:resolved|removed|absent|excluded|ruled out)",
            r"ruled out",
            rf"(?:(?:is|are|was|were) )?(?:not|no longer) (?:definitely |clearly |currently )?{_SEEN}",
            r":\s*(?:none|absent|negative)",
            r"(?:is|are) negative",
        ),
    )
    + _cues(
        CueRole.PRE_UNCERTAINTY,
        (
            r"possible|possibly|probable|probably|likely|most likely|questionable|questionably|question of",
            r"suspicious for|suspicion (?:for|of)|suspected|concern for|worrisome for|equivocal",
            r"may|might|could|there may be|may represent|may reflect|may indicate|could represent|could reflect|"
            r"might represent",
            r"cannot exclude|can not exclude|can't exclude|cannot rule out|can not rule out|difficult to exclude",
            r"borderline|uncertain|indeterminate|presumed|presumably|possibility of|raising the possibility of",
            r"differential (?:diagnosis )?(?:includes|including|of)",
        ),
    )
    + _cues(
        CueRole.PRE_UNCERTAINTY,
        (
            r"concerning for|suggestive of|suggests|suggesting|to suggest|to indicate|indicating|"
            r"which may represent",
        ),
        inherits_negation=True,
    )
    + _cues(
        CueRole.POST_UNCERTAINTY,
        (
            r"(?:cannot|can not|can't) be (?:entirely |completely |totally )?(?:excluded|ruled out)",
            r"(?:is |are )?not (?:entirely |completely |totally )?(?:excluded|ruled out)",
            r"(?:is|are) (?:difficult to exclude|possible|suspected|questioned|questionable|likely|a possibility|suggested)",
            r"(?:may|could|might) be present",
        ),
    )
    + _cues(CueRole.BOTH_UNCERTAINTY, (r"versus|vs\.?|or less likely",))
    + _cues(
        CueRole.PSEUDO,
        (
            r"no (?:significant |interval |substantial )?(?:change|increase|decrease|worsening|improvement)",
            r"not (?:significantly )?(?:changed|increased|decreased|improved|worsened)",
            r"without (?:significant |interval )?change",
            r"not only|no further|gram negative|not necessarily",
            r"partial(?:ly)? (?:resolution|resolved|resolving)|near resolution|resolving|not been removed",
        ),
    )
    + _cues(
        CueRole.BOUNDARY,
        (
            r"but|however|although|though|whereas|while|yet|except(?: for)?|aside from|apart from",
            r"with the exception of|there (?:is|are|has been|have been)|which|:",
        ),
    )
)

# Words a list of negated findings may hold between two mentions ("no focal consolidation, pleural
# effusion, or pneumothorax"). Size and side words only when the list says "or"/"nor": after "no
# pneumothorax," a "small left effusion" is a new, positive statement.
LIST_CONNECTORS = frozenset({",", "and", "or", "nor", "and/or", "/"})
LIST_NEUTRAL = frozenset(
    {
        "focal", "definite", "definitive", "significant", "acute", "new", "large", "sizable", "sizeable",
        "appreciable", "visible", "evident", "overt", "frank", "discrete", "pleural", "airspace",
        "air-space", "pulmonary", "lobar", "other", "any", "a", "an", "the", "of", "evidence", "signs",
        "sign", "obvious", "substantial", "residual", "additional", "superimposed", "gross",
        "confluent", "measurable", "apparent", "to", "suggest", "indicate", "findings", "radiographic",
        "convincing", "interval", "lung", "parenchymal",
    }
)  # fmt: skip
LIST_QUALIFIERS = frozenset(
    {
        "small", "moderate", "mild", "trace", "tiny", "minimal", "left", "right", "bilateral", "left-sided",
        "right-sided", "apical", "basilar", "loculated", "layering", "upper", "lower", "middle", "lobe",
    }
)  # fmt: skip
# Words that end a cue's reach to the first mention: a verb or conjunction starts a new statement.
SCOPE_BREAKERS = frozenset(
    {"is", "are", "was", "were", "be", "been", "has", "have", "appears", "appear", "remains", "remain",
     "and", "with", "which", "that", "who", ","}
)  # fmt: skip
PRE_WINDOW_WORDS = 6  # words a pre-cue may skip to reach its first mention (NegEx uses 5-6)
POST_WINDOW_WORDS = 6
