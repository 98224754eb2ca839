"""Normalised report text for a `Case`: several phrasings per fact, varied sentence order.

Findings mention all seven regions of `echo.findings.REGIONS` (negatives explicit); the Impression
summarises the positives (or says the study is normal). The vocabulary is finite and standard, so
a rule-based labeler reads the labels back, and one case has many valid reports: that multi-modality
is what makes naive one-step decoding incoherent (the effect the distillation fixes). Positive
sentences never carry negation or hedging cues ("no", "without", "possible", "likely" ...), so a
labeler cannot read a present finding as absent or uncertain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from echo.data.case import Case

MIN_WORDS = 40
MAX_WORDS = 110

# Canonical region orders radiologists use; otherwise the regions are shuffled.
_ORDERS: tuple[tuple[str, ...], ...] = (
    ("lungs", "pleura", "heart", "mediastinum", "airway_hila", "bones", "devices"),
    ("devices", "lungs", "pleura", "heart", "mediastinum", "airway_hila", "bones"),
    ("heart", "mediastinum", "airway_hila", "lungs", "pleura", "bones", "devices"),
    ("devices", "heart", "mediastinum", "lungs", "pleura", "airway_hila", "bones"),
)

_LUNGS_CLEAR = (
    "The lungs are clear.",
    "Lungs are clear bilaterally.",
    "The lungs are clear without focal consolidation.",
    "The lungs are well expanded and clear.",
)
_LUNGS_NEGATIVE = (
    "No focal consolidation, pulmonary nodule, or pulmonary edema.",
    "There is no focal consolidation, pulmonary nodule, or pulmonary edema.",
)
_NEGATIVE = {
    "consolidation": (
        "No focal consolidation.",
        "No focal airspace consolidation.",
        "There is no focal consolidation.",
    ),
    "nodule": ("No pulmonary nodules.", "No suspicious pulmonary nodule.", "No pulmonary nodule is seen."),
    "edema": ("No pulmonary edema.", "No evidence of pulmonary edema.", "No pulmonary vascular congestion."),
    "cardiomegaly": (
        "Heart size is normal.",
        "The cardiac silhouette is normal in size.",
        "Normal heart size.",
    ),
}
_PLEURA_CLEAR = (
    "No pleural effusion or pneumothorax.",
    "There is no pleural effusion or pneumothorax.",
    "No pleural effusion. No pneumothorax.",
    "No effusion or pneumothorax.",
)
_NO_EFFUSION = ("No pleural effusion.", "There is no pleural effusion.", "No effusion.")
_NO_PNEUMOTHORAX = ("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen.")
_MEDIASTINUM = (
    "The mediastinal contours are normal.",
    "Mediastinal contours are unremarkable.",
    "Normal mediastinal contours.",
    "The mediastinum is within normal limits.",
)
_CARDIOMEDIASTINAL_NORMAL = (
    "The cardiomediastinal silhouette is normal.",
    "Normal cardiomediastinal silhouette.",
)
_AIRWAY = ("The trachea is midline.", "The trachea is midline and the hila are normal.")
_HILA = ("The hila are unremarkable.", "Hilar contours are normal.", "The hila are normal.")
_BONES = (
    "No acute osseous abnormality.",
    "The osseous structures are intact.",
    "No acute fracture is seen.",
    "Bony structures are unremarkable.",
)
_NO_DEVICES = (
    "No support devices.",
    "No lines or tubes.",
    "No support devices are present.",
    "There are no lines or tubes.",
)
_FILLERS = (
    "The visualized upper abdomen is unremarkable.",
    "The soft tissues are unremarkable.",
    "No subdiaphragmatic free air.",
)
_FILLERS_EXPANDED = ("Lung volumes are normal.", "Both lungs are well expanded.")  # not with pleural disease
_NORMAL_IMPRESSION = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
    "No acute cardiopulmonary findings.",
)

# Findings sentences for positives. Placeholders: {side} {Side} {size} {Size} {lobe} {Lobe} {zone}
# {severity} {Severity} {tip_cm} {route} {tip} {leads}.
_POSITIVE = {
    "cardiomegaly": (
        "Heart size is enlarged.",
        "The cardiac silhouette is enlarged.",
        "{Severity} cardiomegaly.",
        "The heart is enlarged.",
        "There is {severity} cardiomegaly.",
    ),
    "edema": (
        "{Severity} pulmonary edema.",
        "Perihilar haziness and interstitial markings consistent with {severity} pulmonary edema.",
        "There is {severity} interstitial edema with Kerley B lines.",
        "Bilateral perihilar haziness and vascular congestion consistent with pulmonary edema.",
    ),
    "consolidation": (
        "{Lobe} consolidation.",
        "Focal consolidation in the {lobe}.",
        "There is airspace consolidation in the {lobe}.",
        "Airspace opacity in the {lobe} consistent with consolidation.",
    ),
    "nodule": (
        "{Side} {zone} lung nodule.",
        "There is a well-circumscribed nodule in the {side} {zone} lung.",
        "Rounded pulmonary nodule in the {side} {zone} lung zone.",
        "A pulmonary nodule is present in the {side} {zone} lung.",
    ),
    "pleural_effusion": (
        "{Size} {side} pleural effusion.",
        "There is a {size} {side} pleural effusion.",
        "{Side} pleural effusion, {size}.",
        "{Size} {side} pleural effusion with blunting of the costophrenic angle.",
    ),
    "pneumothorax": (
        "{Size} {side} pneumothorax.",
        "There is a {size} {side} pneumothorax.",
        "{Side} apical pneumothorax with a visible pleural line.",
        "{Side} pneumothorax, {size} in size.",
    ),
    "endotracheal_tube": (
        "Endotracheal tube in standard position.",
        "Endotracheal tube terminates {tip_cm} cm above the carina.",
        "The endotracheal tube tip is {tip_cm} cm above the carina.",
        "Endotracheal tube with tip in standard position above the carina.",
    ),
    "central_line": (
        "{Side} {route} central venous catheter with tip in the {tip}.",
        "{Side} {route} central line terminates in the {tip}.",
        "{Side} {route} central venous catheter tip projects over the {tip}.",
    ),
    "pacemaker": (
        "{Side} chest wall pacemaker with {leads}.",
        "{Side}-sided pacemaker with {leads}.",
        "Cardiac pacemaker with {leads} in expected position.",
    ),
}
_BILATERAL_EFFUSION = (
    "{Size} bilateral pleural effusions.",
    "There are {size} bilateral pleural effusions.",
    "Bilateral pleural effusions, {size}.",
    "{Size} bilateral pleural effusions with blunting of the costophrenic angles.",
)
_IMPRESSION = {
    "cardiomegaly": ("Cardiomegaly.", "{Severity} cardiomegaly.", "Enlarged cardiac silhouette."),
    "edema": (
        "Pulmonary edema.",
        "{Severity} pulmonary edema.",
        "Findings consistent with {severity} pulmonary edema.",
    ),
    "consolidation": ("{Lobe} consolidation.", "Consolidation in the {lobe}.", "Focal {lobe} consolidation."),
    "nodule": (
        "{Side} lung nodule.",
        "{Side} pulmonary nodule; recommend CT for further evaluation.",
        "{Side} {zone} lung nodule.",
    ),
    "pleural_effusion": ("{Size} {side} pleural effusion.", "{Side} pleural effusion."),
    "pneumothorax": ("{Side} pneumothorax.", "{Size} {side} pneumothorax."),
    "endotracheal_tube": ("Endotracheal tube in standard position.",),
    "central_line": ("{Side} {route} central line in place.", "Central venous catheter tip in the {tip}."),
    "pacemaker": ("Pacemaker in place.", "Cardiac pacemaker in expected position."),
}
_IMPRESSION_BILATERAL = ("{Size} bilateral pleural effusions.", "Bilateral pleural effusions.")
_IMPRESSION_ORDER = (
    "pneumothorax",
    "consolidation",
    "edema",
    "pleural_effusion",
    "cardiomegaly",
    "nodule",
    "endotracheal_tube",
    "central_line",
    "pacemaker",
)


@dataclass(frozen=True)
class ReportText:
    findings: str
    impression: str

    @property
    def words(self) -> int:
        return len(self.findings.split()) + len(self.impression.split())


def _fields(details: Any) -> dict[str, str]:
    values = {key: str(value) for key, value in details.items()}
    if "leads" in values:
        values["leads"] = (
            "a lead in the right ventricle"
            if values["leads"] == "1"
            else "leads in the right atrium and right ventricle"
        )
    for key in ("side", "size", "lobe", "severity"):
        if key in values:
            values[key.capitalize()] = values[key].capitalize()
    return values


class _Writer:
    """Picks phrasings; in `terse` mode always the shortest, to bring long reports under the limit."""

    def __init__(self, rng: np.random.Generator, terse: bool) -> None:
        self.rng = rng
        self.terse = terse

    def pick(self, options: Sequence[str], details: Any = None) -> str:
        if self.terse:
            text = min(options, key=lambda option: len(option.format(**_fields(details or {}))))
        else:
            text = options[int(self.rng.integers(len(options)))]
        return text.format(**_fields(details or {}))

    def chance(self, probability: float) -> bool:
        return not self.terse and bool(self.rng.random() < probability)


def _positive(writer: _Writer, finding: str, details: Any) -> str:
    if finding == "pleural_effusion" and details["side"] == "bilateral":
        return writer.pick(_BILATERAL_EFFUSION, details)
    return writer.pick(_POSITIVE[finding], details)


def _region_sentences(case: Case, writer: _Writer) -> dict[str, list[str]]:
    positives = case.positives
    regions: dict[str, list[str]] = {}

    lung_classes = ("consolidation", "nodule", "edema")
    present = [name for name in lung_classes if name in positives]
    pleural_disease = "pleural_effusion" in positives or "pneumothorax" in positives
    if not present:
        if writer.chance(0.3):
            regions["lungs"] = [writer.pick(_NEGATIVE[name]) for name in lung_classes]
        elif pleural_disease:  # "the lungs are clear" would contradict a collapsed or fluid-covered lung
            regions["lungs"] = [writer.pick(_LUNGS_NEGATIVE)]
        else:
            regions["lungs"] = [writer.pick(_LUNGS_CLEAR + _LUNGS_NEGATIVE)]
    else:
        regions["lungs"] = [_positive(writer, name, positives[name]) for name in present]
        regions["lungs"] += [
            writer.pick(_NEGATIVE[name])
            for name in lung_classes
            if name not in positives and writer.chance(0.5)
        ]

    effusion, pneumothorax = positives.get("pleural_effusion"), positives.get("pneumothorax")
    if effusion is None and pneumothorax is None:
        regions["pleura"] = [writer.pick(_PLEURA_CLEAR)]
    else:
        pleura = []
        if effusion is not None:
            pleura.append(_positive(writer, "pleural_effusion", effusion))
        elif writer.chance(0.8):
            pleura.append(writer.pick(_NO_EFFUSION))
        if pneumothorax is not None:
            pleura.append(_positive(writer, "pneumothorax", pneumothorax))
        elif writer.chance(0.8):
            pleura.append(writer.pick(_NO_PNEUMOTHORAX))
        regions["pleura"] = pleura

    cardiomegaly = positives.get("cardiomegaly")
    if cardiomegaly is None and writer.chance(0.25):
        regions["heart"] = [
            writer.pick(_CARDIOMEDIASTINAL_NORMAL)
        ]  # one sentence covers heart and mediastinum
        regions["mediastinum"] = []
    else:
        heart = (
            _positive(writer, "cardiomegaly", cardiomegaly)
            if cardiomegaly is not None
            else writer.pick(_NEGATIVE["cardiomegaly"])
        )
        regions["heart"] = [heart]
        regions["mediastinum"] = [writer.pick(_MEDIASTINUM)]

    if "edema" in positives:
        regions["airway_hila"] = [_AIRWAY[0]]  # the hila are hazy with edema: airway only
    else:
        regions["airway_hila"] = [writer.pick(_AIRWAY + _HILA)]
    regions["bones"] = [writer.pick(_BONES)]

    devices = [name for name in ("endotracheal_tube", "central_line", "pacemaker") if name in positives]
    regions["devices"] = [_positive(writer, name, positives[name]) for name in devices] or [
        writer.pick(_NO_DEVICES)
    ]
    return regions


def _impression(case: Case, writer: _Writer) -> str:
    if case.is_normal:
        return writer.pick(_NORMAL_IMPRESSION)
    items = []
    for name in _IMPRESSION_ORDER:
        if name not in case.positives:
            continue
        details = case.positives[name]
        device = name in ("endotracheal_tube", "central_line", "pacemaker")
        if device and (writer.terse or not writer.chance(0.5)):
            continue
        if name == "pleural_effusion" and details["side"] == "bilateral":
            items.append(writer.pick(_IMPRESSION_BILATERAL, details))
        else:
            items.append(writer.pick(_IMPRESSION[name], details))
    if not items:  # only devices, none mentioned: the lungs, heart and pleura are normal
        return writer.pick(_NORMAL_IMPRESSION[:2] + _NORMAL_IMPRESSION[3:])
    if len(items) > 1 and writer.chance(0.4):
        return " ".join(f"{number}. {item}" for number, item in enumerate(items, start=1))
    return " ".join(items)


def _compose(case: Case, writer: _Writer, min_words: int) -> ReportText:
    regions = _region_sentences(case, writer)
    if writer.chance(0.6) or writer.terse:
        order = list(_ORDERS[int(writer.rng.integers(len(_ORDERS)))])
    else:
        order = list(regions)
        writer.rng.shuffle(order)
    sentences = [sentence for region in order for sentence in regions[region]]
    impression = _impression(case, writer)
    pleural_disease = "pleural_effusion" in case.positives or "pneumothorax" in case.positives
    fillers = list(_FILLERS if pleural_disease else _FILLERS + _FILLERS_EXPANDED)
    writer.rng.shuffle(fillers)
    while len(" ".join(sentences).split()) + len(impression.split()) < min_words and fillers:
        sentences.insert(int(writer.rng.integers(len(sentences) + 1)), fillers.pop())
    return ReportText(findings=" ".join(sentences), impression=impression)


def write_report(
    case: Case, rng: np.random.Generator, attempts: int = 6, limits: tuple[int, int] = (MIN_WORDS, MAX_WORDS)
) -> ReportText:
    """A report of limits[0]..limits[1] words; long cases fall back to the tersest phrasing."""
    low, high = limits
    for _ in range(attempts):
        text = _compose(case, _Writer(rng, terse=False), low)
        if low <= text.words <= high:
            return text
    text = _compose(case, _Writer(rng, terse=True), low)
    if not low <= text.words <= high:
        raise ValueError(f"cannot fit the report in {low}-{high} words ({text.words} words)")
    return text
