"""The labeler reads a site's house-style reports as well as the default ones (issue 17, section 4).

Site reports (echo/data/site_reports.py) use other phrasings, region orders, labelled subsections
and abbreviations (ETT, PTX, CVC, PPM, b/l, RLL ...). Agreement with the true labels must be as high
as on default reports of the same cases' kind, for the presets and for a name-derived site.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from echo.data.case import sample_case
from echo.data.reports import write_report
from echo.data.site import site_profile
from echo.data.site_reports import write_site_report
from echo.findings import FINDINGS
from echo.metrics.attributes import attributes_of
from echo.metrics.findings_f1 import f1_from_labels
from echo.metrics.labeler import Analysis, analyse
from echo.report import format_report

STUDIES = 500
SITES = ("riverside", "lakeside", "northgate")  # two presets and a name-derived site


def _studies(site: str | None) -> list[tuple[object, Analysis, str]]:
    rng = np.random.default_rng(2026)
    profile = None if site is None else site_profile(site)
    studies = []
    for _ in range(STUDIES):
        if profile is None:
            case = sample_case(rng)
            text = write_report(case, rng)
        else:
            case = sample_case(rng, profile.prevalence.icu, profile.prevalence.scale)
            text = write_site_report(case, rng, profile.style)
        report = format_report(text.findings, text.impression)
        studies.append((case, analyse(report), report))
    return studies


@pytest.fixture(scope="module")
def default_studies():
    return _studies(None)


@pytest.fixture(scope="module", params=SITES)
def site_studies(request):
    return request.param, _studies(request.param)


def _f1(studies):
    return f1_from_labels([a.labels() for _, a, _ in studies], [case.labels for case, _, _ in studies])


def test_agreement_on_site_reports_is_as_high_as_on_default_reports(default_studies, site_studies):
    site, studies = site_studies
    default, shifted = _f1(default_studies), _f1(studies)
    assert shifted.micro >= default.micro - 0.005, (site, shifted.micro, default.micro)
    for finding in FINDINGS:
        score = shifted.per_class[finding]
        assert score.support > 0, (site, finding)
        assert score.f1 >= 0.98, (site, finding, score)


def test_negatives_in_site_reports_are_never_read_as_positive_or_uncertain(site_studies):
    site, studies = site_studies
    for case, analysis, report in studies:
        labels = analysis.labels()
        for finding, truth in case.labels.items():
            if truth == "negative":
                assert labels.get(finding, "negative") == "negative", (site, finding, report)


def test_sides_and_lobes_are_read_from_site_reports(site_studies):
    site, studies = site_studies
    wrong = [
        (case.attributes, attributes_of(a)) for case, a, _ in studies if attributes_of(a) != case.attributes
    ]
    assert len(wrong) <= STUDIES * 0.02, (site, wrong[:3])


def test_site_reports_are_written_in_another_house_style(default_studies):
    """The shift is real: abbreviations, technique lines and subsections the default never writes."""
    house = re.compile(r"\b(?:ETT|PTX|CVC|PPM|CXR|WNL|b/l|LINES/TUBES:|LUNGS:)")
    _, studies = "riverside", _studies("riverside")
    assert sum(bool(house.search(report)) for _, _, report in studies) > 0.8 * STUDIES
    assert not any(house.search(report) for _, _, report in default_studies)
    assert sum("LINES/TUBES:" in report for _, _, report in studies) > 0.3 * STUDIES
