"""The labeler's finding terms: how chest radiograph reports name each finding.

Each class's phrases (and the "fixed" phrases that carry their own label, such as "lungs are clear"),
the group phrases that count only when negated ("no acute cardiopulmonary process"), and findings
outside the nine classes, kept so that lists of findings chain through them. Pattern conventions
are in `echo.metrics.phrases`.

The lists are modelled on the CheXpert labeler's mention phrases (Irvin et al. 2019), kept to what
a chest radiograph report says about these nine classes.
"""

from __future__ import annotations

from echo.findings import FINDINGS, SUPPORT_DEVICES, Label
from echo.metrics.phrases import Term, TermKind, compile_phrase, triggers

DEVICES: tuple[str, ...] = SUPPORT_DEVICES
NON_DEVICE: tuple[str, ...] = tuple(f for f in FINDINGS if f not in DEVICES)
PARENCHYMA: tuple[str, ...] = ("consolidation", "edema", "nodule")


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
        r"ppms?",  # permanent pacemaker
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
