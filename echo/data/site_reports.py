"""A site's house reporting style: its own phrasing, region order, templates and abbreviations.

Written from the same `Case` as `echo.data.reports` (so the labels stay true) but as another
hospital's radiologists write: a technique sentence first ("Portable AP view of the chest."), the
site's own subset of phrasings for each fact, its house order of regions (sometimes another one),
on some reports labelled subsections ("LINES/TUBES: ... LUNGS: ... PLEURA: ..."), abbreviations
(ETT, PTX, CVC, PPM, IJ, SVC, b/l, RLL, WNL, CHF) and numbered impressions. The rule-based labeler
(`echo.metrics.labeler`) reads the same findings from these reports as from the default ones
(tests/metrics/test_labeler_on_site_reports.py): every positive sentence names its finding in
words or abbreviations the labeler knows, without negation or hedging cues.

The manifest contract keeps FINDINGS before IMPRESSION (`format_report`); what changes order is
the findings' regions (and subsections).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from echo.data.case import Case
from echo.data.reports import MAX_WORDS, MIN_WORDS, ReportText
from echo.data.site import HouseStyle
from echo.findings import SUPPORT_DEVICES

# Each fact: (plain phrasings, abbreviated phrasings). A site keeps two of the plain ones.
Phrases = tuple[tuple[str, ...], tuple[str, ...]]

_HEADERS = {
    "lungs": "LUNGS",
    "pleura": "PLEURA",
    "heart": "HEART",
    "mediastinum": "MEDIASTINUM",
    "airway_hila": "AIRWAY/HILA",
    "bones": "BONES",
    "devices": "LINES/TUBES",
}
_TECHNIQUE: dict[str, Phrases] = {
    "AP": (
        (
            "Portable AP view of the chest.",
            "Single portable AP radiograph of the chest.",
            "AP portable chest.",
        ),
        ("Portable AP CXR.", "AP portable CXR, single view."),
    ),
    "PA": (
        ("Single PA view of the chest.", "Frontal view of the chest.", "PA radiograph of the chest."),
        ("PA CXR.", "Single view PA CXR."),
    ),
    "PA+LL": (
        ("PA and lateral views of the chest.", "Frontal and lateral radiographs of the chest."),
        ("PA/lat CXR.", "PA and lat CXR."),
    ),
}
_PHRASES: dict[str, Phrases] = {
    "lungs_clear": (
        ("The lungs are clear.", "Clear lungs.", "Both lungs are clear.", "The lungs are clear and well expanded."),
        ("Lungs clear.", "Lungs clear b/l."),
    ),
    "lungs_negative": (
        ("No focal airspace disease, nodule, or edema.", "No consolidation, nodule, or pulmonary edema."),
        ("No consolidation or edema.", "No focal airspace disease or edema."),
    ),
    "no_consolidation": (
        ("No focal airspace disease.", "No consolidation.", "No focal opacity."),
        ("No focal consolidation.",),
    ),
    "no_nodule": (("No suspicious nodule.", "No nodules or masses.", "No pulmonary nodule or mass."), ("No nodules.",)),
    "no_edema": (
        ("No edema.", "No vascular congestion.", "No pulmonary edema or vascular congestion."),
        ("No CHF.", "No edema."),
    ),
    "pleura_clear": (
        ("No pleural effusion or pneumothorax.", "No effusion or pneumothorax.", "The pleural spaces are clear."),
        ("No effusion or PTX.", "No PTX or effusion."),
    ),
    "no_effusion": (("No effusion.", "No pleural effusion."), ("No effusion.",)),
    "no_pneumothorax": (("No pneumothorax.", "No pneumothorax is seen."), ("No PTX.",)),
    "heart_normal": (
        ("Heart size is normal.", "Normal heart size.", "The heart is not enlarged."),
        ("Heart size WNL.", "Normal heart size."),
    ),
    "cardiomediastinal_normal": (
        ("Cardiomediastinal silhouette is within normal limits.", "Normal cardiomediastinal silhouette."),
        ("Cardiomediastinal silhouette WNL.",),
    ),
    "mediastinum": (
        ("Mediastinum is unremarkable.", "Mediastinal contours are within normal limits.", "Normal mediastinum."),
        ("Mediastinum WNL.",),
    ),
    "airway": (("The trachea is midline.", "Trachea is midline."), ("Trachea midline.",)),
    "hila": (("Hila are unremarkable.", "The hila are normal in appearance."), ("Hila WNL.",)),
    "bones": (
        ("No acute osseous abnormality.", "Osseous structures are intact.", "No acute bony abnormality."),
        ("No acute fx.", "Bones intact."),
    ),
    "no_devices": (("No lines or tubes.", "No support devices."), ("No lines/tubes.",)),
    "normal_impression": (
        ("No acute cardiopulmonary process.", "No acute cardiopulmonary disease.", "No acute intrathoracic abnormality."),
        ("No acute cardiopulmonary process.",),
    ),
}  # fmt: skip
_POSITIVE: dict[str, Phrases] = {
    "cardiomegaly": (
        ("Cardiomegaly.", "{Severity} cardiomegaly.", "The heart is enlarged.", "The cardiac silhouette is {severely} enlarged."),
        ("{Severity} cardiomegaly.",),
    ),
    "edema": (
        ("{Severity} interstitial edema.", "Vascular congestion with {severity} interstitial edema.", "{Severity} pulmonary edema with cephalization."),
        ("{Severity} pulm edema.", "Findings c/w {severity} CHF."),
    ),
    "consolidation": (
        ("{Lobe} airspace disease.", "Consolidation in the {lobe}.", "Patchy opacity in the {lobe}, compatible with pneumonia."),
        ("{LOBE} consolidation.", "{LOBE} airspace disease."),
    ),
    "nodule": (
        ("{Side} {zone} zone nodule.", "Nodule in the {side} {zone} lung zone.", "Solitary nodule in the {side} {zone} lung."),
        ("{Side} {zone} lung nodule.",),
    ),
    "pleural_effusion": (
        ("{Size} {side} pleural effusion.", "{Side} {size} effusion.", "{Size} {side}-sided pleural effusion."),
        ("{Size} {side} effusion.",),
    ),
    "bilateral_effusion": (
        ("{Size} bilateral pleural effusions.", "Bilateral {size} effusions."),
        ("{Size} b/l effusions.", "{Size} b/l pleural effusions."),
    ),
    "pneumothorax": (
        ("{Size} {side} pneumothorax.", "{Side} apical pneumothorax, {size}."),
        ("{Size} {side} PTX.", "{Side} apical PTX, {size}."),
    ),
    "endotracheal_tube": (
        ("Endotracheal tube tip {tip_cm} cm above the carina.", "Endotracheal tube in satisfactory position."),
        ("ETT {tip_cm} cm above the carina.", "ETT in good position.", "ETT tip {tip_cm} cm above carina."),
    ),
    "central_line": (
        ("{Side} {route} venous catheter, tip in the {tip}.", "{Side} {route} central line with tip at the {tip}."),
        ("{S} {ROUTE} CVC, tip {TIP}.", "{S} {ROUTE} CVC tip at the {TIP}."),
    ),
    "pacemaker": (
        ("{Side} chest wall pacemaker with {leads}.", "{Side}-sided pacemaker, {leads}."),
        ("{Side} PPM, {LEADS}.", "{S} PPM with {LEADS}."),
    ),
}  # fmt: skip
_IMPRESSION: dict[str, Phrases] = {
    "cardiomegaly": (("Cardiomegaly.", "Enlarged heart."), ("Cardiomegaly.",)),
    "edema": (("{Severity} pulmonary edema.", "Interstitial edema."), ("{Severity} CHF.", "CHF.")),
    "consolidation": (("{Lobe} pneumonia.", "{Lobe} consolidation."), ("{LOBE} pneumonia.",)),
    "nodule": (("{Side} lung nodule; CT recommended.", "{Side} {zone} nodule."), ("{Side} nodule, recommend CT.",)),
    "pleural_effusion": (("{Size} {side} effusion.", "{Side} pleural effusion."), ("{Side} effusion.",)),
    "bilateral_effusion": (("{Size} bilateral effusions.", "Bilateral pleural effusions."), ("B/l effusions.",)),
    "pneumothorax": (("{Side} pneumothorax.", "{Size} {side} pneumothorax."), ("{Side} PTX.",)),
    "endotracheal_tube": (("Endotracheal tube in satisfactory position.",), ("ETT in good position.",)),
    "central_line": (("{Side} {route} line in place.",), ("{S} {ROUTE} CVC in place.",)),
    "pacemaker": (("Pacemaker in place.",), ("PPM in place.",)),
}  # fmt: skip
_IMPRESSION_ORDER = (
    "pneumothorax", "pleural_effusion", "edema", "consolidation", "cardiomegaly", "nodule",
    "endotracheal_tube", "central_line", "pacemaker",
)  # fmt: skip
_FILLERS = (
    "The soft tissues are unremarkable.",
    "No free air under the diaphragm.",
    "The upper abdomen is unremarkable.",
    "No subcutaneous emphysema.",
    "Visualized osseous structures are grossly intact.",
    "Comparison: none available.",
)
_FILLERS_EXPANDED = ("Lung volumes are normal.", "Adequate inspiratory effort.")
_LOBE_ABBREVIATIONS = {
    "right upper lobe": "RUL",
    "right middle lobe": "RML",
    "right lower lobe": "RLL",
    "left upper lobe": "LUL",
    "left lower lobe": "LLL",
}
_ROUTES = {"internal jugular": "IJ", "subclavian": "subclavian"}
_TIPS = {"superior vena cava": "SVC", "cavoatrial junction": "cavoatrial junction"}


def _fields(details: Any) -> dict[str, str]:
    values = {key: str(value) for key, value in details.items()}
    if "leads" in values:
        one = values["leads"] == "1"
        values["LEADS"] = "RV lead" if one else "RA/RV leads"
        values["leads"] = (
            "a lead in the right ventricle" if one else "leads in the right atrium and ventricle"
        )
    for key in ("side", "size", "lobe", "severity"):
        if key in values:
            values[key.capitalize()] = values[key].capitalize()
    if "severity" in values:
        values["severely"] = values["severity"] + "ly"  # mildly, moderately
    if "side" in values:
        values["S"] = values["side"][0].upper()
    if "lobe" in values:
        values["LOBE"] = _LOBE_ABBREVIATIONS[values["lobe"]]
    if "route" in values:
        values["ROUTE"] = _ROUTES[values["route"]]
    if "tip" in values:
        values["TIP"] = _TIPS[values["tip"]]
    return values


def house_phrasebook(style: HouseStyle) -> dict[str, Phrases]:
    """The site's own phrasings: two of the plain variants of each fact, chosen by `style.phrasing`."""
    rng = np.random.default_rng(style.phrasing)
    book: dict[str, Phrases] = {}
    for group, tables in (("", _PHRASES), ("+", _POSITIVE), ("!", _IMPRESSION), ("@", _TECHNIQUE)):
        for key, (plain, abbreviated) in tables.items():
            keep = sorted(rng.choice(len(plain), size=min(2, len(plain)), replace=False).tolist())
            book[group + key] = (tuple(plain[i] for i in keep), abbreviated)
    return book


class _Writer:
    def __init__(self, rng: np.random.Generator, style: HouseStyle, terse: bool) -> None:
        self.rng = rng
        self.style = style
        self.book = house_phrasebook(style)
        self.terse = terse

    def chance(self, probability: float) -> bool:
        return not self.terse and bool(self.rng.random() < probability)

    def pick(self, key: str, details: Any = None) -> str:
        plain, abbreviated = self.book[key]
        fields = _fields(details or {})
        options: Sequence[str] = abbreviated if self.rng.random() < self.style.abbreviation_rate else plain
        if self.terse:
            return min((o.format(**fields) for o in (*plain, *abbreviated)), key=len)
        return options[int(self.rng.integers(len(options)))].format(**fields)


def _positive(writer: _Writer, finding: str, details: Any, prefix: str = "+") -> str:
    if finding == "pleural_effusion" and details["side"] == "bilateral":
        return writer.pick(prefix + "bilateral_effusion", details)
    return writer.pick(prefix + finding, details)


def _regions(case: Case, writer: _Writer) -> dict[str, list[str]]:
    positives = case.positives
    regions: dict[str, list[str]] = {}
    lung_classes = ("consolidation", "nodule", "edema")
    present = [name for name in lung_classes if name in positives]
    pleural_disease = "pleural_effusion" in positives or "pneumothorax" in positives
    if present:
        regions["lungs"] = [_positive(writer, name, positives[name]) for name in present]
        regions["lungs"] += [
            writer.pick(f"no_{n}") for n in lung_classes if n not in positives and writer.chance(0.4)
        ]
    elif pleural_disease or writer.chance(0.3):  # "lungs are clear" would contradict a pleural process
        regions["lungs"] = [writer.pick("lungs_negative")]
    else:
        regions["lungs"] = [writer.pick("lungs_clear")]

    effusion, pneumothorax = positives.get("pleural_effusion"), positives.get("pneumothorax")
    if effusion is None and pneumothorax is None:
        regions["pleura"] = [writer.pick("pleura_clear")]
    else:
        regions["pleura"] = [
            _positive(writer, "pleural_effusion", effusion) if effusion else writer.pick("no_effusion"),
            _positive(writer, "pneumothorax", pneumothorax)
            if pneumothorax
            else writer.pick("no_pneumothorax"),
        ]
    cardiomegaly = positives.get("cardiomegaly")
    if cardiomegaly is None and writer.chance(0.3):
        regions["heart"], regions["mediastinum"] = [writer.pick("cardiomediastinal_normal")], []
    else:
        heart = (
            _positive(writer, "cardiomegaly", cardiomegaly) if cardiomegaly else writer.pick("heart_normal")
        )
        regions["heart"], regions["mediastinum"] = [heart], [writer.pick("mediastinum")]
    hila = "edema" not in positives and writer.chance(0.5)  # hazy hila with edema: trachea only
    regions["airway_hila"] = [writer.pick("airway")] + ([writer.pick("hila")] if hila else [])
    regions["bones"] = [writer.pick("bones")]
    devices = [name for name in SUPPORT_DEVICES if name in positives]
    regions["devices"] = [_positive(writer, n, positives[n]) for n in devices] or [writer.pick("no_devices")]
    return regions


def _impression(case: Case, writer: _Writer) -> str:
    items = []
    for name in _IMPRESSION_ORDER:
        if name in case.positives and (name not in SUPPORT_DEVICES or writer.chance(0.4)):
            items.append(_positive(writer, name, case.positives[name], prefix="!"))
    if not items:  # normal, or devices only
        return writer.pick("normal_impression")
    if len(items) > 1 and writer.style.numbered_impression:
        return " ".join(f"{number}. {item}" for number, item in enumerate(items, start=1))
    return " ".join(items)


def _compose(case: Case, writer: _Writer, min_words: int) -> ReportText:
    regions = _regions(case, writer)
    order = list(writer.style.order)
    if writer.chance(writer.style.other_order_rate):
        writer.rng.shuffle(order)
    structured = writer.chance(writer.style.structured_rate)
    parts = []
    for region in order:
        sentences = regions[region]
        if not sentences:
            continue
        parts.append(f"{_HEADERS[region]}: {' '.join(sentences)}" if structured else " ".join(sentences))
    acquisition = case.acquisition
    view = "AP" if acquisition.view == "AP" else "PA+LL" if acquisition.lateral else "PA"
    if writer.chance(writer.style.technique_rate):
        parts.insert(0, writer.pick("@" + view))
    impression = _impression(case, writer)
    pleural_disease = "pleural_effusion" in case.positives or "pneumothorax" in case.positives
    fillers = list(_FILLERS if pleural_disease else _FILLERS + _FILLERS_EXPANDED)
    writer.rng.shuffle(fillers)
    while len(" ".join(parts).split()) + len(impression.split()) < min_words and fillers:
        parts.append(fillers.pop())  # the house style puts incidental remarks last
    return ReportText(findings=" ".join(parts), impression=impression)


def write_site_report(
    case: Case, rng: np.random.Generator, style: HouseStyle, attempts: int = 6
) -> ReportText:
    """A report in the site's house style of MIN_WORDS..MAX_WORDS words (tersest phrasing if long)."""
    for _ in range(attempts):
        text = _compose(case, _Writer(rng, style, terse=False), MIN_WORDS)
        if MIN_WORDS <= text.words <= MAX_WORDS:
            return text
    text = _compose(case, _Writer(rng, style, terse=True), MIN_WORDS)
    if not MIN_WORDS <= text.words <= MAX_WORDS:
        raise ValueError(f"cannot fit the report in {MIN_WORDS}-{MAX_WORDS} words ({text.words} words)")
    return text
