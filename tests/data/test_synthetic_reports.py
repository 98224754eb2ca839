from __future__ import annotations

import re

import pytest

from echo.data.case import make_case, sample_case
from echo.data.reports import MAX_WORDS, MIN_WORDS, write_report
from echo.data.streams import component_rng

# A phrase that shows each region was mentioned (every phrasing in the bank contains one).
REGION_CUES = {
    "lungs": r"\blungs?\b|consolidation|pulmonary nodule|nodule|pulmonary edema|interstitial edema",
    "pleura": r"pleural|effusion|pneumothorax",
    "heart": r"heart|cardiac|cardiomegaly|cardiomediastinal",
    "mediastinum": r"mediastin",
    "airway_hila": r"trachea|hila|hilar",
    "bones": r"osseous|fracture|bony",
    "devices": r"support devices|lines or tubes|endotracheal|central (line|venous)|pacemaker",
}
NEGATION_OR_HEDGE = re.compile(
    r"\b(no|not|without|possible|likely|may|cannot|suspicious|questionable|concerning)\b", re.I
)


def _case(seed: int, index: int):
    return sample_case(component_rng(seed, index, "case"))


def test_every_report_mentions_all_seven_regions_within_the_word_limits() -> None:
    for index in range(600):
        text = write_report(_case(1, index), component_rng(1, index, "report"))
        assert MIN_WORDS <= text.words <= MAX_WORDS, (index, text.words)
        for region, cue in REGION_CUES.items():
            assert re.search(cue, text.findings, re.I), (region, text.findings)


def test_positive_sentences_name_the_finding_and_its_attribute_without_negation_cues() -> None:
    keywords = {
        "cardiomegaly": r"cardiomegaly|enlarged",
        "pleural_effusion": r"pleural effusion",
        "pneumothorax": r"pneumothorax",
        "consolidation": r"consolidation",
        "nodule": r"nodule",
        "edema": r"pulmonary edema|interstitial edema",
        "endotracheal_tube": r"endotracheal tube",
        "central_line": r"central (line|venous catheter)",
        "pacemaker": r"pacemaker",
    }
    for index in range(400):
        case = _case(2, index)
        text = write_report(case, component_rng(2, index, "report"))
        sentences = re.split(r"(?<=\.)\s+", text.findings)
        for name, details in case.positives.items():
            hits = [s for s in sentences if re.search(keywords[name], s, re.I)]
            assert hits, (name, text.findings)
            assert any(not NEGATION_OR_HEDGE.search(s) for s in hits), (name, hits)
            attribute = details.get("side") or details.get("lobe")
            if attribute and name in ("pleural_effusion", "pneumothorax", "nodule", "consolidation"):
                assert any(attribute in s.lower() for s in hits), (name, attribute, hits)


def test_normal_study_reads_normal() -> None:
    case = next(c for c in (_case(3, i) for i in range(100)) if c.is_normal)
    text = write_report(case, component_rng(3, 0, "report"))
    assert re.search(r"no acute|normal chest radiograph", text.impression, re.I)
    assert "enlarged" not in text.findings


def test_one_case_has_several_valid_reports_with_varied_wording_and_order() -> None:
    case = next(c for c in (_case(4, i) for i in range(200)) if len(c.positives) >= 2)
    texts = {write_report(case, component_rng(seed, 0, "report")).findings for seed in range(12)}
    assert len(texts) >= 8
    first_sentences = {t.split(". ")[0] for t in texts}
    assert len(first_sentences) >= 3


def test_vocabulary_is_finite_and_small() -> None:
    words: set[str] = set()
    for index in range(1500):
        text = write_report(_case(5, index), component_rng(5, index, "report"))
        words.update(w.strip(".,;:").lower() for w in (text.findings + " " + text.impression).split())
    assert len(words) < 200


def test_same_stream_gives_the_same_report() -> None:
    case = _case(6, 1)
    assert write_report(case, component_rng(6, 1, "report")) == write_report(
        case, component_rng(6, 1, "report")
    )


def test_every_finding_at_once_still_fits_the_limit() -> None:
    base = _case(0, 0)
    everything = make_case(
        {
            "cardiomegaly": {"severity": "moderate", "ctr": 0.66},
            "pleural_effusion": {"side": "bilateral", "size": "moderate"},
            "pneumothorax": {"side": "left", "size": "large"},
            "consolidation": {"lobe": "right middle lobe"},
            "nodule": {"side": "left", "zone": "upper"},
            "edema": {"severity": "moderate"},
            "endotracheal_tube": {"tip_cm": 4},
            "central_line": {"side": "right", "route": "subclavian", "tip": "superior vena cava"},
            "pacemaker": {"side": "left", "leads": 2},
        },
        base.body,
        base.acquisition,
    )
    for seed in range(20):
        assert write_report(everything, component_rng(seed, 0, "report")).words <= MAX_WORDS


def test_a_report_that_cannot_fit_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"cannot fit the report in 5-10 words \(\d+ words\)"):
        write_report(_case(0, 0), component_rng(0, 0, "report"), limits=(5, 10))
