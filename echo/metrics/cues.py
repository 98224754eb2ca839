"""The labeler's cue phrases: negation, uncertainty, pseudo-cues and boundaries, and their reach.

The lists are modelled on the CheXpert labeler's negation and uncertainty phrases (Irvin et al.
2019) and on NegEx's triggers, pseudo-triggers and terminations (Chapman et al. 2001). Pattern
conventions are in `echo.metrics.phrases`.
"""

from __future__ import annotations

from echo.metrics.phrases import Cue, CueRole, compile_phrase, triggers


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
